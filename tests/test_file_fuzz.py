"""Fuzz: structured-random and mutated codes files (``.npz``), token files (``.npz``, ``.json``), ``.ecdc``
files and WAV headers are loaded in a subprocess with an address-space limit (``RLIMIT_AS``) and a
per-input timeout; each load must give a valid result or a clean :class:`rvqkit.errors.RvqkitError`,
never another exception, a crash, a memory blow-up or a hang (issue 20).

Inputs come from hypothesis strategies, derandomized with a fixed budget so that every run loads the
same files; they are generated in this process and loaded in one worker process (one import of torch),
which prints a line per input. ``tests/test_ecdc_fuzz.py`` fuzzes ``.ecdc`` decoding in-process (LM
files included); here its mutations run on packed files under the memory limit.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import resource
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from bitstream.test_ecdc_fuzz import _mutations, mutate  # tests/bitstream/
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rvqkit.bitstream import write_ecdc
from rvqkit.config import ENCODEC_24KHZ, PRESETS
from rvqkit.encoded import FORMAT, Encoded
from rvqkit.framing import frames_for_length, segment_count
from rvqkit.tokens import TokenLayout

MEMORY_LIMIT = 2 << 30  # bytes of address space for the worker (importing torch takes about 1 GiB)
TIMEOUT_S = 20  # per input
BUDGET = {"codes": 260, "tokens_npz": 140, "tokens_json": 140, "ecdc": 120, "wav": 200}

WORKER = r"""
import json, sys, traceback
from rvqkit.audio import audio_info, read_audio
from rvqkit.bitstream import read_ecdc
from rvqkit.config import PRESETS
from rvqkit.encoded import Encoded, check_fields
from rvqkit.errors import RvqkitError
from rvqkit.tokens.files import read_tokens


def load(kind, path):
    if kind == "codes":  # what `rvqkit decode` and /v1/decode do before the model runs
        enc = Encoded.load(path)
        cfg = PRESETS.get(enc.model)
        if cfg is not None and cfg.sampling_rate == enc.sample_rate:
            check_fields(enc, cfg)
        return list(enc.codes.shape)
    if kind.startswith("tokens"):  # what `rvqkit detokenize` does before the model runs
        f = read_tokens(path)
        codes, frames = f.layout.decode(f.ids, f.attention_mask)
        return list(codes.shape)
    if kind == "ecdc":
        with open(path, "rb") as fo:
            enc = read_ecdc(fo)
        check_fields(enc, PRESETS[enc.model])
        return list(enc.codes.shape)
    if kind == "wav":
        info = audio_info(path)
        x, sr = read_audio(path)
        return [int(sr), *x.shape]
    raise ValueError(kind)


for line in sys.stdin:
    kind, path = line.rstrip("\n").split("\t")
    try:
        out = {"status": "ok", "detail": load(kind, path)}
    except RvqkitError as e:
        out = {"status": "clean", "detail": f"{type(e).__name__}: {e}"[:300]}
    except BaseException as e:
        out = {"status": "bad", "detail": "".join(traceback.format_exception(e))[-2000:]}
    print(json.dumps(out), flush=True)
"""


def _limit_memory() -> None:  # runs in the worker before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_worker(inputs: list[tuple[str, Path]], folder: Path) -> list[dict]:
    """Load each (kind, path) in one worker; a missing line within TIMEOUT_S is a hang, a worker that
    dies is reported for the input it was loading."""
    script = folder / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_limit_memory,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    assert proc.stdin is not None
    proc.stdin.write("".join(f"{k}\t{p}\n" for k, p in inputs))
    proc.stdin.close()
    results: list[dict] = []
    for i in range(len(inputs)):
        try:
            line = lines.get(timeout=TIMEOUT_S + (60 if i == 0 else 0))  # the first waits for imports
        except queue.Empty:
            proc.kill()
            results.append({"status": "bad", "detail": f"no answer within {TIMEOUT_S} s (hang)"})
            break
        if line is None:
            proc.wait()
            err = proc.stderr.read()[-2000:] if proc.stderr else ""
            results.append({"status": "bad", "detail": f"worker died (exit {proc.returncode}): {err}"})
            break
        results.append(json.loads(line))
    proc.wait(timeout=30)
    return results


def examples(strategy: st.SearchStrategy, n: int) -> list:
    """``n`` derandomized draws of ``strategy`` (fewer if it has fewer distinct values)."""
    out: list = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(x):
        out.append(x)

    collect()
    return out


# -- strategies ------------------------------------------------------------------------------------------
JSONISH = st.one_of(
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-3, 3), max_size=3),
    st.sampled_from([0, 1, 24000, 48000, 10**12, -1, "encodec_24khz", "encodec_48khz", "evil/repo"]),
)
BIG_LENGTHS = st.sampled_from([0, -1, 10**12, 2**62, 2**63 - 1, -(2**63), 48000 * 86400 + 1])
SHAPE_EDIT = st.one_of(
    st.none(),
    st.lists(st.sampled_from([0, 1, 2, 10, 2**31, 2**40, 2**62]), min_size=0, max_size=4),
)
DTYPES = ["<i2", "<i8", ">i2", "<u2", "<i1", "<f4", "|b1", "<c8", "<u8"]


def _npy_shape_edit(data: bytes, shape: list[int] | None) -> bytes:
    """Rewrite the first ``'shape': (...)`` of an uncompressed archive (the header length changes)."""
    if shape is None:
        return data
    text = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    return re.sub(rb"'shape': \([0-9, ]*\)", f"'shape': {text}".encode(), data, count=1)


def _savez(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


EDITS = ["none", "none", "none", "lengths", "frames", "n_q", "dtype", "range", "meta", "scales"]
EDITS += ["drop", "extra", "shape", "bytes", "bytes"]


@st.composite
def codes_files(draw) -> bytes:
    """A valid codes file for a preset (or a custom model name) with one drawn perturbation."""
    model = draw(st.sampled_from(["encodec_24khz", "encodec_48khz", "encodec_48khz", "custom"]))
    cfg = PRESETS.get(model, ENCODEC_24KHZ)
    edit = draw(st.sampled_from(EDITS))
    batch = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(1, 20000), min_size=batch, max_size=batch))
    if edit == "lengths":
        lengths[draw(st.integers(0, batch - 1))] = draw(BIG_LENGTHS)
    frames = [frames_for_length(cfg, n) if n > 0 else 0 for n in lengths]
    if edit == "frames":
        frames[draw(st.integers(0, batch - 1))] = draw(st.integers(-2, 2**40))
    n_q = draw(st.sampled_from([1, 2, 8]))
    width = min(max(frames), 100)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    codes = rng.integers(0, 1024, (batch, n_q, width))
    if edit == "range":
        codes.flat[draw(st.integers(0, codes.size - 1))] = draw(st.sampled_from([-1, 1024, 2**15 - 1]))
    if edit == "n_q":
        codes = rng.integers(0, 1024, (batch, draw(st.sampled_from([0, 33, 65])), width))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)) if edit == "dtype" else "<i2")
    arrays = {
        "codes": codes.astype(dtype),
        "lengths": np.array(lengths, dtype=np.int64),
        "frame_lengths": np.array(frames, dtype=np.int64),
    }
    meta = {
        "format": FORMAT,
        "version": 1,
        "model": model,
        "weights_sha256": None,
        "sample_rate": cfg.sampling_rate,
        "channels": cfg.audio_channels,
        "bandwidth": cfg.bandwidth_for_n_q(n_q),
        "n_q": n_q,
    }
    if edit == "meta":
        meta[draw(st.sampled_from(sorted(meta)))] = draw(JSONISH)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    if cfg.normalize:
        nseg = min(segment_count(cfg, max(lengths)), 100)
        arrays["scales"] = rng.uniform(0.1, 2.0, (batch, nseg)).astype(np.float32)
        if edit == "scales":
            arrays["scales"].flat[0] = draw(st.sampled_from([0.0, -1.0, np.nan, np.inf]))
    return _edited_npz(arrays, edit, draw)


def _edited_npz(arrays: dict[str, np.ndarray], edit: str, draw) -> bytes:
    """The ``.npz`` bytes of ``arrays`` after the file-level ``edit`` (a member dropped or added, an npy
    header's shape changed, bytes mutated), for the codes and the token files alike."""
    if edit == "drop":
        del arrays[draw(st.sampled_from(sorted(arrays)))]
    if edit == "extra":
        arrays["extra"] = np.zeros(draw(st.integers(0, 4096)), dtype=np.uint8)
    data = _savez(arrays, compressed=draw(st.booleans()))
    if edit == "shape":
        data = _npy_shape_edit(data, draw(SHAPE_EDIT))
    if edit == "bytes":
        data = mutate(data, draw(_mutations()))
    return data


def _token_source(layout: TokenLayout, draw, model: str) -> tuple[Encoded, object]:
    cfg = PRESETS[model]
    batch = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(1, 6000), min_size=batch, max_size=batch))
    frames = [frames_for_length(cfg, n) for n in lengths]
    codes = torch.randint(0, 1024, (batch, max(layout.n_q, 1), max(frames)))
    scales = torch.rand(batch, segment_count(cfg, max(lengths))) + 0.1 if cfg.normalize else None
    enc = Encoded(
        codes,
        scales,
        torch.tensor(lengths),
        torch.tensor(frames),
        cfg.sampling_rate,
        cfg.audio_channels,
        cfg.bandwidth_for_n_q(layout.n_q),
        model,
    )
    return enc, layout.encode(enc)


@st.composite
def token_layouts(draw) -> TokenLayout:
    name = draw(st.sampled_from(["flatten", "codebook", "delay", "parallel"]))
    return TokenLayout(
        name,  # type: ignore[arg-type]
        draw(st.integers(1, 4)),
        offset=draw(st.sampled_from([0, 100])),
        begin=draw(st.booleans()),
        end=draw(st.booleans()),
    )


@st.composite
def token_npz_files(draw) -> bytes:
    """A valid ``.npz`` token file with one drawn perturbation."""
    layout = draw(token_layouts())
    enc, batch = _token_source(layout, draw, draw(st.sampled_from(sorted(PRESETS))))
    edit = draw(st.sampled_from(EDITS + ["mask", "source"]))
    arrays = {
        "ids": batch.ids.numpy(),
        "attention_mask": batch.attention_mask.numpy(),
        "frame_lengths": enc.frame_lengths.numpy(),
        "lengths": enc.lengths.numpy(),
    }
    if edit == "dtype":
        arrays["ids"] = arrays["ids"].astype(
            draw(st.sampled_from(["<i4", "<f4", "|b1", "<c8", ">i8", "<u2"]))
        )
    if edit == "mask":
        arrays["attention_mask"] = arrays["attention_mask"].astype(
            draw(st.sampled_from(["<i8", "<f4", "|u1"]))
        )
    if edit == "range":
        arrays["ids"].flat[draw(st.integers(0, arrays["ids"].size - 1))] = draw(st.integers(-(2**40), 2**40))
    if edit == "lengths":
        arrays["lengths"] = np.array([draw(BIG_LENGTHS) for _ in enc.lengths], dtype=np.int64)
    if edit == "frames":
        arrays["frame_lengths"] = np.array(
            [draw(st.integers(-2, 2**40)) for _ in enc.lengths], dtype=np.int64
        )
    if enc.scales is not None:
        arrays["scales"] = enc.scales.numpy().copy()
        if edit == "scales":
            arrays["scales"][0, 0] = draw(st.sampled_from([np.nan, -1.0, 0.0, np.inf]))
    settings_ = layout.settings()
    if edit in ("meta", "n_q"):
        settings_[draw(st.sampled_from(sorted(settings_)))] = draw(JSONISH)
    meta = {"format": "rvqkit-tokens", "version": 1, "layout": settings_, "source": {"model": enc.model}}
    if edit == "source":
        meta["source"][draw(st.sampled_from(["model", "sample_rate"]))] = draw(JSONISH)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return _edited_npz(arrays, edit, draw)


@st.composite
def token_json_files(draw) -> bytes:
    layout = draw(token_layouts())
    enc, batch = _token_source(layout, draw, draw(st.sampled_from(sorted(PRESETS))))
    doc = {
        "format": "rvqkit-tokens",
        "version": 1,
        "layout": layout.settings(),
        "source": {"model": enc.model, "sample_rate": enc.sample_rate},
        "frame_lengths": enc.frame_lengths.tolist(),
        "lengths": enc.lengths.tolist(),
        "scales": None if enc.scales is None else enc.scales.tolist(),
        "items": [it.tolist() for it in batch.items()],
    }
    edit = draw(st.sampled_from(["none", "field", "layout", "item", "lengths", "scales", "flat", "deep"]))
    if edit == "field":
        doc[draw(st.sampled_from(sorted(doc)))] = draw(JSONISH)
    elif edit == "layout":
        doc["layout"][draw(st.sampled_from(sorted(doc["layout"])))] = draw(JSONISH)
    elif edit == "item":
        first = doc["items"][0]
        row = first[0] if isinstance(first[0], list) else first
        row[0] = draw(
            st.one_of(st.floats(allow_nan=True), st.booleans(), st.integers(-(2**70), 2**70), st.text())
        )
    elif edit == "lengths":
        doc["lengths"] = [draw(BIG_LENGTHS) for _ in doc["lengths"]]
    elif edit == "scales":
        doc["scales"] = [[draw(st.sampled_from([float("nan"), -1.0, 0.0, float("inf"), 1.0]))]]
    elif edit == "flat":
        doc["items"] = draw(st.lists(st.integers(0, 2000), max_size=200))
    text = json.dumps(doc)
    if edit == "deep":
        text = "[" * draw(st.integers(1, 200_000))
    data = text.encode()
    if edit != "deep" and draw(st.booleans()):
        data = mutate(data, draw(_mutations()))
    return data


@st.composite
def ecdc_files(draw) -> bytes:
    model = draw(st.sampled_from(sorted(PRESETS)))
    cfg = PRESETS[model]
    n = draw(st.integers(1, 3 * cfg.sampling_rate // 10))
    frames = frames_for_length(cfg, n)
    n_q = cfg.n_q_for_bandwidth(cfg.target_bandwidths[0])
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    enc = Encoded(
        torch.randint(0, 1024, (1, n_q, frames), generator=gen),
        torch.rand(1, segment_count(cfg, n), generator=gen) + 0.1 if cfg.normalize else None,
        torch.tensor([n]),
        torch.tensor([frames]),
        cfg.sampling_rate,
        cfg.audio_channels,
        cfg.bandwidth_for_n_q(n_q),
        model,
    )
    fo = io.BytesIO()
    write_ecdc(fo, enc)
    return mutate(fo.getvalue(), draw(_mutations()))


@st.composite
def wav_files(draw) -> bytes:
    """A RIFF/WAVE header with drawn fields (format, channels, rate, bits, declared sizes) and a short
    payload; sometimes extra chunks, a cut or byte edits."""
    fmt_tag = draw(st.sampled_from([1, 1, 3, 0xFFFE, 0, 2, 6, 7, 0x55, 65535]))
    channels = draw(st.one_of(st.sampled_from([1, 2]), st.integers(0, 70000)))
    rate = draw(st.one_of(st.sampled_from([8000, 16000, 44100, 48000]), st.integers(0, 2**32 - 1)))
    bits = draw(st.sampled_from([8, 16, 24, 32, 64, 0, 12, 65535]))
    block = draw(st.one_of(st.just(max(1, channels * bits // 8) % 65536), st.integers(0, 65535)))
    payload = draw(st.binary(max_size=2048))
    data_size = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**32 - 1)))
    fmt = struct.pack("<HHIIHH", fmt_tag, channels % 65536, rate, (rate * block) % 2**32, block, bits)
    if fmt_tag == 0xFFFE:
        fmt += struct.pack("<HHHI", 22, bits, 0, 0) + draw(st.binary(min_size=16, max_size=16))
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if draw(st.booleans()):
        extra = draw(st.binary(max_size=64))
        chunks += (
            draw(st.sampled_from([b"LIST", b"fact", b"junk", b"data"]))
            + struct.pack("<I", len(extra))
            + extra
        )
    body = b"WAVE" + chunks + b"data" + struct.pack("<I", data_size) + payload
    riff = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
    data = b"RIFF" + struct.pack("<I", riff) + body
    if draw(st.integers(0, 3)) == 0:
        data = mutate(data, draw(_mutations()))
    return data


STRATEGIES = {
    "codes": (codes_files(), ".npz"),
    "tokens_npz": (token_npz_files(), ".npz"),
    "tokens_json": (token_json_files(), ".json"),
    "ecdc": (ecdc_files(), ".ecdc"),
    "wav": (wav_files(), ".wav"),
}


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory) -> dict[str, list[tuple[Path, dict]]]:
    folder = tmp_path_factory.mktemp("file_fuzz")
    inputs: list[tuple[str, Path]] = []
    for kind, (strategy, suffix) in STRATEGIES.items():
        for i, data in enumerate(examples(strategy, BUDGET[kind])):
            path = folder / f"{kind}-{i:04d}{suffix}"
            path.write_bytes(data)
            inputs.append((kind, path))
    results = run_worker(inputs, folder)
    out: dict[str, list[tuple[Path, dict]]] = {k: [] for k in STRATEGIES}
    for (kind, path), res in zip(inputs, results, strict=False):
        out[kind].append((path, res))
    return out


@pytest.mark.parametrize("kind", list(STRATEGIES))
def test_every_input_loads_or_fails_cleanly(fuzz_results, kind):
    results = fuzz_results[kind]
    bad = [(p.name, r["detail"]) for p, r in results if r["status"] == "bad"]
    assert not bad, f"{len(bad)} {kind} inputs failed badly; first: {bad[0][0]}\n{bad[0][1]}"
    assert len(results) >= BUDGET[kind] // 2, f"only {len(results)} {kind} inputs were loaded"
    statuses = {r["status"] for _, r in results}
    assert statuses == {"ok", "clean"}, f"{kind}: the strategy must give both valid and invalid files"
