"""The GPU table of rvqkit's batching engine, each figure beside its reference from the same run.

One script, one process (plus the corpus command and the compile trial as child processes), on one GPU,
in under 5 minutes. The 24 kHz model with ``random-24khz`` weights (:func:`rvqkit.weights.random_weights`),
6 kbps, fp32 with TF32 off (rvqkit's own precision control, :mod:`rvqkit.precision`; the references run
under the same setting). ``transformers.EncodecModel`` and Meta's ``encodec`` get the very same tensors:
their weight norm is removed and rvqkit's folded weights are loaded (strict: every tensor accounted for),
so code differences measure arithmetic only.

Sections (each prints ``skipped: reason`` when a reference or package is missing, and never stops the
others):

1. equal lengths: the engine (``Codec.engine()``) on 32 × 10 s vs ``transformers`` on one batch of 32;
2. mixed lengths: the engine on N items of 1-30 s vs ``transformers`` per item and in padded, sorted
   batches of 32 with ``padding_mask`` (how many codes the padding moves against its own per-item codes);
3. one 60 s file, ``Codec.encode`` + ``Codec.decode`` vs ``transformers``;
4. live streams: one ``Engine.advance`` for 1,024 live encode jobs of 80 ms chunks, and every stream's
   codes against offline encoding through the same engine;
5. agreement with the references on a few 10 s benchmark signals; an item alone vs in a batch of 64;
6. precision modes ``tf32`` and ``bf16``: codes that move against fp32, and their speed;
7. ``torch.compile`` of the model's encode step (default and ``reduce-overhead``, i.e. CUDA graphs) on
   the live-stream step, in a child process with a time limit: speed and whether the codes held;
8. ``rvqkit corpus encode --device cuda`` end to end on ~200 generated files (1-30 s; WAV, FLAC, OGG;
   16-48 kHz; mono and stereo).

    python benchmarks/gpu_bench.py                      # the GPU table (CUDA), under 5 minutes
    python benchmarks/gpu_bench.py --quick              # fewer items, streams steps and files
    python benchmarks/gpu_bench.py --out results.json   # also write every figure as JSON

Without CUDA it runs a reduced smoke version (a few seconds of audio, 8 streams, 10 files) and says so:
its figures are not the GPU table. Times are wall-clock seconds with ``torch.cuda.synchronize()`` before
and after each timed call, after an untimed warm-up call; x real time = audio seconds / wall seconds.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(HERE))
if str(SRC) not in sys.path:  # run from a checkout without `pip install -e .` (the GPU machine)
    sys.path.insert(0, str(SRC))
# rvqkit before torch: importing it makes OpenMP's threads sleep while they wait (rvqkit.runtime), which
# it can only do before torch loads; on a busy CPU spinning threads made the smoke run many times slower.
try:
    importlib.import_module("rvqkit")
except ImportError as _e:  # on the GPU machine: soundfile and soxr come as wheels (docs/performance.md, GPU)
    sys.exit(f"cannot import rvqkit ({_e}); install its dependencies (docs/performance.md, section GPU)")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_models import REPO, STUBS, make_signal  # noqa: E402

BANDWIDTH = 6.0  # kbps: 8 codebooks
RATE = 24000  # Hz, the model's
CHUNK = 1920  # samples: 80 ms live-stream chunks
CPU_LSTM_BATCH = 8  # the corpus command's --lstm-batch on CPU (the smoke run), and the check's
TIME_BUDGET = 270.0  # seconds: the compile trial gets what is left of this

SMOKE_BANNER = "CPU SMOKE RUN — not the GPU table"


@dataclass(frozen=True)
class Sizes:
    """How much work each section does."""

    equal_items: int  # equal-length batch
    equal_seconds: float
    mixed_items: int  # mixed-length set, lengths uniform in [mixed_min, mixed_max] s
    mixed_min: float
    mixed_max: float
    pad_batch: int  # transformers' padded batches
    long_seconds: float  # the single long file
    streams: int  # live encode jobs
    stream_steps: int  # timed engine steps
    signals: int  # agreement signals
    signal_seconds: float
    batch_items: int  # the batch the agreement signals are also encoded in
    files: int  # corpus files, lengths uniform in [file_min, file_max] s
    file_min: float
    file_max: float
    repeats: int  # timed repeats of the short cases (median)


FULL = Sizes(32, 10.0, 256, 1.0, 30.0, 32, 60.0, 1024, 20, 4, 10.0, 64, 200, 1.0, 30.0, 3)
QUICK = Sizes(32, 10.0, 64, 1.0, 30.0, 32, 60.0, 1024, 10, 2, 10.0, 32, 50, 1.0, 30.0, 2)
SMOKE = Sizes(2, 1.0, 4, 1.0, 2.0, 2, 3.0, 8, 2, 2, 1.0, 4, 10, 1.0, 2.0, 1)


# -- bookkeeping -------------------------------------------------------------------------------------------
class Skip(Exception):
    """A section (or part of one) cannot run here; the message says why."""


class Report:
    """Table rows, PASS/FAIL checks, skipped parts and every figure (for ``--out``)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.figures: dict[str, Any] = {}
        self.checks: dict[str, bool] = {}
        self.skipped: dict[str, str] = {}
        self.failed: dict[str, str] = {}

    def row(self, section: str, what: str, rvqkit: str, reference: str = "–", target: str = "–") -> None:
        self.rows.append((section, what, rvqkit, reference, target))

    def fig(self, key: str, value: Any) -> None:
        self.figures[key] = value

    def check(self, section: str, what: str, ok: bool, detail: str, target: str = "–") -> None:
        self.checks[f"{section}: {what}"] = ok
        self.row(section, what, f"**{'PASS' if ok else 'FAIL'}** ({detail})", "–", target)
        print(f"  {'PASS' if ok else 'FAIL'}: {what} ({detail})", flush=True)

    def skip(self, what: str, why: str) -> None:
        self.skipped[what] = why
        print(f"  skipped: {what}: {why}", flush=True)


R = Report()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free() -> None:
    """Drop what the last section left (Python garbage, the CUDA allocator's cached blocks)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def xrt(audio_s: float, wall_s: float) -> str:
    return f"{audio_s / wall_s:,.0f}×" if wall_s > 0 else "–"


def share(differ: int, total: int) -> str:
    return f"{differ:,} of {total:,} ({100 * differ / max(total, 1):.3f} %)"


def differ_codes(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> tuple[int, int]:
    """(codes that differ, codes compared) between two lists of ``[n_q, frames]``; a shape difference
    counts every code of the longer."""
    bad = total = 0
    for x, y in zip(a, b, strict=True):
        x, y = x.cpu(), y.cpu()
        if x.shape != y.shape:
            bad += max(x.numel(), y.numel())
            total += max(x.numel(), y.numel())
            continue
        bad += int((x != y).sum())
        total += x.numel()
    return bad, total


def section(name: str, fn: Callable[[], None]) -> None:
    """Run one section; a missing package is ``skipped``, an error is reported as FAILED (with its
    traceback) and the run goes on."""
    print(f"\n== {name}", flush=True)
    t0 = time.perf_counter()
    try:
        fn()
    except Skip as e:
        R.skip(name, str(e))
    except torch.cuda.OutOfMemoryError as e:
        R.skip(name, f"out of GPU memory ({str(e).splitlines()[0]})")
    except Exception as e:
        traceback.print_exc()
        R.failed[name] = f"{type(e).__name__}: {e}"
        R.row(name, "error", f"**FAILED**: {type(e).__name__}: {str(e)[:120]}")
    finally:
        free()
    R.fig(f"section_seconds.{name}", round(time.perf_counter() - t0, 2))
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)


# -- models ------------------------------------------------------------------------------------------------
def fold_weight_norm(model: torch.nn.Module) -> None:
    """Remove weight norm (``torch.nn.utils.parametrizations`` or the older hooks) from every layer,
    leaving the plain weight, so that rvqkit's folded tensors can be loaded as they are."""
    from torch.nn.utils import parametrize

    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        elif hasattr(m, "weight_g") and hasattr(m, "weight_v"):
            torch.nn.utils.remove_weight_norm(m)


_CODEBOOK = re.compile(r"^quantizer\.(?:vq\.)?layers\.(\d+)\.(?:_codebook|codebook)\.(\w+)$")
_META_TO_RVQKIT = [
    (re.compile(r"^(encoder|decoder)\.model\."), r"\1.layers."),
    (re.compile(r"\.conv\.conv\."), ".conv."),
    (re.compile(r"\.convtr\.convtr\."), ".conv."),
]


@torch.no_grad()
def load_rvqkit_tensors(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy rvqkit's tensors into a reference model (weight norm removed); every tensor of both sides
    accounted for, shapes checked. Codebook buffers other than ``embed`` are left (``inited`` set)."""
    used: set[str] = set()
    for key, value in model.state_dict().items():
        m = _CODEBOOK.match(key)
        if m:
            if m.group(2) == "embed":
                value.copy_(state["quantizer.codebooks"][int(m.group(1))])
                used.add("quantizer.codebooks")
            elif m.group(2) == "inited":
                value.fill_(1)
            continue
        name = key
        for pattern, repl in _META_TO_RVQKIT:
            name = pattern.sub(repl, name)
        if name not in state or state[name].shape != value.shape:
            raise RuntimeError(
                f"no rvqkit tensor of shape {tuple(value.shape)} for {key} (looked for {name})"
            )
        value.copy_(state[name])
        used.add(name)
    unused = sorted(set(state) - used)
    if unused:
        raise RuntimeError(f"rvqkit tensors not used by {type(model).__name__}: {unused[:3]}")


class Refs:
    """The reference models on the device (None with the reason when not importable)."""

    hf: Any = None
    hf_why = ""
    meta: Any = None
    meta_why = ""


def build_references(state: dict[str, torch.Tensor], device: torch.device) -> Refs:
    refs = Refs()
    try:
        from transformers import EncodecConfig, EncodecModel

        hf = EncodecModel(EncodecConfig()).eval()  # the defaults are facebook/encodec_24khz
        fold_weight_norm(hf)
        load_rvqkit_tensors(hf, state)
        refs.hf = hf.to(device)
    except Exception as e:
        refs.hf_why = f"transformers.EncodecModel unavailable ({type(e).__name__}: {e})"
        R.skip("transformers reference", refs.hf_why)
    try:
        try:
            import torchaudio  # noqa: F401  Meta's encodec imports it at import time
        except Exception:
            sys.modules.pop("torchaudio", None)
            sys.path.insert(0, str(STUBS))  # the tests' stand-in
        import encodec

        torch.manual_seed(0)
        meta = encodec.EncodecModel.encodec_model_24khz(pretrained=False).eval()
        fold_weight_norm(meta)
        load_rvqkit_tensors(meta, state)
        meta.set_target_bandwidth(BANDWIDTH)
        refs.meta = meta.to(device)
    except Exception as e:
        refs.meta_why = f"Meta's encodec unavailable ({type(e).__name__}: {e})"
        R.skip("encodec reference", refs.meta_why)
    return refs


def ref_scope(device: torch.device):
    """The references run as rvqkit's fp32: inference mode, TF32 off (restored afterwards)."""
    from contextlib import ExitStack

    from rvqkit.precision import precision_scope

    stack = ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(precision_scope("fp32", device))
    return stack


def hf_encode_one(hf: Any, x: torch.Tensor, device: torch.device, bw: float = BANDWIDTH) -> torch.Tensor:
    """transformers' codes ``[n_q, frames]`` (CPU) of one item ``[1, T]`` (CPU)."""
    out = hf.encode(x[None].to(device), bandwidth=bw)
    return out[0][0, 0].cpu()


def hf_decode_one(hf: Any, codes: torch.Tensor, length: int, device: torch.device) -> torch.Tensor:
    audio = hf.decode(codes[None, None].to(device), [None])[0]
    return audio[0, :, :length].cpu()


def meta_encode_one(meta: Any, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    frames = meta.encode(x[None].to(device))
    return torch.cat([c for c, _ in frames], dim=-1)[0].cpu()


def signals(count: int, seconds: float, seed: int) -> list[torch.Tensor]:
    """Benchmark signals ``[1, T]`` (tones, a chirp and noise; :func:`bench_models.make_signal`)."""
    n = int(seconds * RATE)
    return [torch.from_numpy(make_signal(n, 1, RATE, seed=seed + i)) for i in range(count)]


def mixed_signals(count: int, lo: float, hi: float, seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    lengths = (rng.uniform(lo, hi, count) * RATE).astype(int)
    return [torch.from_numpy(make_signal(int(n), 1, RATE, seed=seed + i)) for i, n in enumerate(lengths)]


# -- sections ----------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, sizes: Sizes, device: torch.device, smoke: bool) -> None:
        from rvqkit import Codec
        from rvqkit.weights import build_model, random_weights

        self.args, self.sizes, self.device, self.smoke = args, sizes, device, smoke
        t0 = time.perf_counter()
        self.weights = random_weights("random-24khz")
        self.state = self.weights.state_dict
        self.codec = Codec(build_model(self.weights.config, self.state), device, self.weights.sha256)
        self.n_q = self.codec.n_q_for(BANDWIDTH)
        self.refs = build_references(self.state, device)
        print(f"models built in {time.perf_counter() - t0:.1f} s", flush=True)

    # 1 ------------------------------------------------------------------------------------------------
    def equal(self) -> None:
        s, dev, codec = self.sizes, self.device, self.codec
        name = f"{s.equal_items} × {s.equal_seconds:g} s equal"
        items = signals(s.equal_items, s.equal_seconds, seed=100)
        audio_s = s.equal_items * s.equal_seconds
        engine = codec.engine()
        enc_s, enc = timed(lambda: engine.encode(items, self.n_q), s.repeats)
        codes = [e.codes for e in enc]
        lengths = [x.shape[-1] for x in items]
        dec_s, _ = timed(lambda: engine.decode(codes, [None] * len(codes), lengths), s.repeats)
        R.fig("equal.rvqkit_encode_xrt", audio_s / enc_s)
        R.fig("equal.rvqkit_decode_xrt", audio_s / dec_s)
        R.fig("equal.peak_gib_rvqkit", peak_gib())
        ref_enc = ref_dec = f"skipped: {self.refs.hf_why}"
        if self.refs.hf is not None:
            hf = self.refs.hf
            batch = torch.stack(items)  # [B, 1, T]
            with ref_scope(dev):
                h_enc_s, out = timed(lambda: hf.encode(batch.to(dev), bandwidth=BANDWIDTH), s.repeats)
                h_dec_s, _ = timed(lambda: hf.decode(out[0], out[1])[0].cpu(), s.repeats)
            hf_codes = [c.cpu() for c in out[0][0]]
            bad, total = differ_codes(codes, hf_codes)
            R.fig("equal.transformers_encode_xrt", audio_s / h_enc_s)
            R.fig("equal.transformers_decode_xrt", audio_s / h_dec_s)
            R.fig("equal.codes_differ_vs_transformers_batch", [bad, total])
            ref_enc = f"transformers, one batch: {xrt(audio_s, h_enc_s)}"
            ref_dec = f"transformers, one batch: {xrt(audio_s, h_dec_s)}"
            print(f"  codes differing from transformers' batch: {share(bad, total)}")
        R.row(f"engine, {name}", "encode, x real time", xrt(audio_s, enc_s), ref_enc)
        R.row(f"engine, {name}", "decode, x real time", xrt(audio_s, dec_s), ref_dec)
        print(
            f"  rvqkit engine: encode {xrt(audio_s, enc_s)}, decode {xrt(audio_s, dec_s)}; {ref_enc}; {ref_dec}"
        )

    # 2 ------------------------------------------------------------------------------------------------
    def mixed(self) -> None:
        s, dev, codec = self.sizes, self.device, self.codec
        items = mixed_signals(s.mixed_items, s.mixed_min, s.mixed_max, seed=1000)
        lengths = [x.shape[-1] for x in items]
        audio_s = sum(lengths) / RATE
        name = f"engine, {s.mixed_items} × {s.mixed_min:g}-{s.mixed_max:g} s mixed ({audio_s / 60:.1f} min)"
        engine = codec.engine()
        warm = items[: min(8, len(items))]
        engine.encode(warm, self.n_q)  # warm-up: the regular step's shape and a few finals
        enc_s, enc = timed(lambda: engine.encode(items, self.n_q), 1, warmup=0)
        codes = [e.codes for e in enc]
        engine.decode(codes[: len(warm)], [None] * len(warm), lengths[: len(warm)])
        dec_s, _ = timed(lambda: engine.decode(codes, [None] * len(codes), lengths), 1, warmup=0)
        R.fig("mixed.audio_seconds", audio_s)
        R.fig("mixed.rvqkit_encode_xrt", audio_s / enc_s)
        R.fig("mixed.rvqkit_decode_xrt", audio_s / dec_s)
        R.fig("mixed.peak_gib_rvqkit", peak_gib())
        print(f"  rvqkit engine: encode {xrt(audio_s, enc_s)}, decode {xrt(audio_s, dec_s)}")
        ref_enc = ref_dec = f"skipped: {self.refs.hf_why}"
        if self.refs.hf is not None:
            hf = self.refs.hf
            with ref_scope(dev):
                hf_encode_one(hf, warm[0], dev)  # warm-up
                h_enc_s, hf_codes = timed(lambda: [hf_encode_one(hf, x, dev) for x in items], 1, warmup=0)
                h_dec_s, _ = timed(
                    lambda: [hf_decode_one(hf, c, n, dev) for c, n in zip(hf_codes, lengths, strict=True)],
                    1,
                    warmup=0,
                )
                try:
                    (p_enc_s, p_dec_s), padded_codes = self._hf_padded(items)
                    pbad, ptotal = differ_codes(padded_codes, hf_codes)
                    R.fig("mixed.transformers_padded_encode_xrt", audio_s / p_enc_s)
                    R.fig("mixed.transformers_padded_decode_xrt", audio_s / p_dec_s)
                    R.fig("mixed.transformers_padded_codes_differ_vs_per_item", [pbad, ptotal])
                    padded_enc = (
                        f"padded+sorted batches of {s.pad_batch} with padding_mask: {xrt(audio_s, p_enc_s)}, "
                        f"{share(pbad, ptotal)} codes differ from its own per-item codes"
                    )
                    padded_dec = f"padded+sorted: {xrt(audio_s, p_dec_s)}"
                except torch.cuda.OutOfMemoryError:
                    padded_enc = padded_dec = "padded+sorted: out of GPU memory"
                    R.skip("transformers padded batches", f"out of GPU memory (batches of {s.pad_batch})")
                    free()
            bad, total = differ_codes(codes, hf_codes)
            R.fig("mixed.transformers_per_item_encode_xrt", audio_s / h_enc_s)
            R.fig("mixed.transformers_per_item_decode_xrt", audio_s / h_dec_s)
            R.fig("mixed.codes_differ_engine_vs_transformers_per_item", [bad, total])
            ref_enc = f"transformers per item: {xrt(audio_s, h_enc_s)}; {padded_enc}"
            ref_dec = f"transformers per item: {xrt(audio_s, h_dec_s)}; {padded_dec}"
            R.row(name, "codes differing from transformers per item", share(bad, total), "–", "see agreement")
            print(f"  {ref_enc}\n  {ref_dec}\n  engine vs transformers per item: {share(bad, total)} differ")
        R.row(name, "encode, x real time", xrt(audio_s, enc_s), ref_enc, "≥ 6,000×")
        R.row(name, "decode, x real time", xrt(audio_s, dec_s), ref_dec, "≥ 5,000×")

    def _hf_padded(self, items: list[torch.Tensor]) -> tuple[tuple[float, float], list[torch.Tensor]]:
        """transformers' best mixed-length path: items sorted by length, padded batches with
        ``padding_mask``; (encode s, decode s) and each item's codes (its own frames)."""
        hf, dev, b = self.refs.hf, self.device, self.sizes.pad_batch
        order = sorted(range(len(items)), key=lambda i: items[i].shape[-1])
        batches = [order[i : i + b] for i in range(0, len(order), b)]
        hop = self.codec.hop_length

        def padded(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            t = max(items[i].shape[-1] for i in idx)
            x = torch.zeros(len(idx), 1, t)
            mask = torch.zeros(len(idx), t, dtype=torch.bool)
            for r, i in enumerate(idx):
                x[r, :, : items[i].shape[-1]] = items[i]
                mask[r, : items[i].shape[-1]] = True
            return x, mask

        inputs = [padded(idx) for idx in batches]  # built beforehand: the padding is not timed
        hf.encode(inputs[0][0][:1, :, :RATE].to(dev), bandwidth=BANDWIDTH)  # warm-up
        codes: list[torch.Tensor] = [torch.empty(0)] * len(items)
        outs = []
        sync()
        t0 = time.perf_counter()
        for idx, (x, mask) in zip(batches, inputs, strict=True):
            out = hf.encode(x.to(dev), padding_mask=mask.to(dev), bandwidth=BANDWIDTH)
            got = out[0][0].cpu()
            for r, i in enumerate(idx):
                codes[i] = got[r, :, : -(-items[i].shape[-1] // hop)]
            outs.append(out)
        sync()
        enc_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for idx, (_, mask), out in zip(batches, inputs, outs, strict=True):
            audio = hf.decode(out[0], out[1], mask.to(dev))[0].cpu()
            _ = [audio[r, :, : items[i].shape[-1]] for r, i in enumerate(idx)]
        sync()
        return (enc_s, time.perf_counter() - t0), codes

    # 3 ------------------------------------------------------------------------------------------------
    def long_file(self) -> None:
        s, dev, codec = self.sizes, self.device, self.codec
        x = signals(1, s.long_seconds, seed=7)[0]
        name = f"one {s.long_seconds:g} s file"
        xn = x.numpy()
        codec.decode(codec.encode(xn[..., :RATE], RATE))  # warm-up on 1 s
        enc_s, enc = timed(lambda: codec.encode(xn, RATE, bandwidth=BANDWIDTH), s.repeats)
        dec_s, _ = timed(lambda: codec.decode(enc).cpu(), s.repeats)
        R.fig("long.rvqkit_encode_s", enc_s)
        R.fig("long.rvqkit_decode_s", dec_s)
        ref = [f"skipped: {self.refs.hf_why}"] * 3
        if self.refs.hf is not None:
            hf = self.refs.hf
            with ref_scope(dev):
                h_enc_s, hc = timed(lambda: hf_encode_one(hf, x, dev), s.repeats)
                h_dec_s, _ = timed(lambda: hf_decode_one(hf, hc, x.shape[-1], dev), s.repeats)
            bad, total = differ_codes([enc.codes[0]], [hc])
            R.fig("long.transformers_encode_s", h_enc_s)
            R.fig("long.transformers_decode_s", h_dec_s)
            R.fig("long.codes_differ_vs_transformers", [bad, total])
            ref = [f"transformers: {h_enc_s:.3f} s", f"transformers: {h_dec_s:.3f} s"]
            ref.append(f"transformers: {h_enc_s + h_dec_s:.3f} s ({share(bad, total)} codes differ)")
        R.row(name, "encode, s (Codec.encode)", f"{enc_s:.3f} s", ref[0])
        R.row(name, "decode, s (Codec.decode)", f"{dec_s:.3f} s", ref[1])
        R.row(name, "encode + decode, s", f"{enc_s + dec_s:.3f} s", ref[2], "≤ transformers")
        print(f"  rvqkit encode {enc_s:.3f} s, decode {dec_s:.3f} s; {ref[2]}")

    # 4 ------------------------------------------------------------------------------------------------
    def streams(self) -> None:
        from rvqkit.engine import Engine

        s, dev = self.sizes, self.device
        name = f"live streams, {s.streams} × 80 ms chunks"
        engine = Engine(self.codec.model, dev, "fp32", rows="batched", slots=s.streams, step=CHUNK)
        steps = 3 + 3 + s.stream_steps  # 3 to fill the feed rule's look-ahead, 3 warm-up, then timed
        gen = torch.Generator().manual_seed(5)
        audio = 0.1 * torch.randn(s.streams, 1, steps * CHUNK, generator=gen)
        jobs = [engine.open_encoder(self.n_q) for _ in range(s.streams)]
        advance_ms, step_ms, calls = [], [], []
        for k in range(steps):
            sync()
            t0 = time.perf_counter()
            for i, job in enumerate(jobs):
                job.push(audio[i, :, k * CHUNK : (k + 1) * CHUNK])
            sync()
            t1 = time.perf_counter()
            before = engine.calls
            engine.advance(jobs)
            sync()
            t2 = time.perf_counter()
            if k >= 6:
                advance_ms.append(1000 * (t2 - t1))
                step_ms.append(1000 * (t2 - t0))
                calls.append(engine.calls - before)
        adv, whole = statistics.median(advance_ms), statistics.median(step_ms)
        p90 = sorted(advance_ms)[int(0.9 * (len(advance_ms) - 1))]
        R.fig("streams.count", s.streams)
        R.fig("streams.advance_ms_median", adv)
        R.fig("streams.advance_ms_p90", p90)
        R.fig("streams.push_and_advance_ms_median", whole)
        R.fig("streams.model_calls_per_step", calls)
        R.fig("streams.peak_gib", peak_gib())
        capacity = s.streams * 80.0 / whole
        R.row(name, "one Engine.advance, ms (median; p90)", f"{adv:.2f} ms; {p90:.2f} ms", "–", "≤ 5 ms")
        R.row(
            name,
            "push 80 ms to each + advance, ms",
            f"{whole:.2f} ms (≈ {capacity:,.0f} real-time streams at this rate)",
            "–",
            "server ≥ 500 streams",
        )
        R.row(name, "model calls per step", f"{min(calls)}-{max(calls)}")
        print(f"  advance {adv:.2f} ms (p90 {p90:.2f}), push + advance {whole:.2f} ms, calls/step {calls}")
        # every stream's codes equal offline encoding through the same engine (a few streams checked)
        check = list(range(min(4, s.streams)))
        for i in check:
            jobs[i].end()
        engine.advance([jobs[i] for i in check])
        live = [torch.cat([p.codes[0] for p in jobs[i].collect()], dim=-1).cpu() for i in check]
        offline = engine.encode([audio[i] for i in check], self.n_q)
        bad, total = differ_codes(live, [e.codes for e in offline])
        R.check(name, "live codes = offline through the same engine", bad == 0, f"{share(bad, total)} differ")

    # 5 ------------------------------------------------------------------------------------------------
    def agreement(self) -> None:
        s, dev, codec, refs = self.sizes, self.device, self.codec, self.refs
        sig = signals(s.signals, s.signal_seconds, seed=0)
        name = f"agreement, {s.signals} × {s.signal_seconds:g} s signals, fp32"
        total_audio = s.signals * s.signal_seconds
        alone = {}
        for bw in (BANDWIDTH, 24.0):
            alone[bw] = [codec.encode(x.numpy(), RATE, bandwidth=bw).codes[0] for x in sig]
        self.fp32_codes = alone[BANDWIDTH]
        self.signals = sig
        for bw in (BANDWIDTH, 24.0):
            rv = alone[bw]
            tgt = "≤ 0.05 %" if bw == BANDWIDTH else "–"
            if refs.hf is not None:
                with ref_scope(dev):
                    hf_codes = [hf_encode_one(refs.hf, x, dev, bw) for x in sig]
                bad, total = differ_codes(rv, hf_codes)
                R.fig(f"agreement.{bw:g}kbps.vs_transformers", [bad, total])
                R.row(name, f"{bw:g} kbps: codes differing from transformers", share(bad, total), "–", tgt)
            else:
                R.skip(f"agreement vs transformers ({bw:g} kbps)", refs.hf_why)
            if refs.meta is not None:
                refs.meta.set_target_bandwidth(bw)
                with ref_scope(dev):
                    meta_codes = [meta_encode_one(refs.meta, x, dev) for x in sig]
                refs.meta.set_target_bandwidth(BANDWIDTH)
                bad, total = differ_codes(rv, meta_codes)
                R.fig(f"agreement.{bw:g}kbps.vs_encodec", [bad, total])
                R.row(name, f"{bw:g} kbps: codes differing from Meta's encodec", share(bad, total), "–", tgt)
                if refs.hf is not None:
                    bad, total = differ_codes(hf_codes, meta_codes)
                    R.fig(f"agreement.{bw:g}kbps.transformers_vs_encodec", [bad, total])
                    R.row(name, f"{bw:g} kbps: transformers vs encodec (reference)", share(bad, total))
            else:
                R.skip(f"agreement vs encodec ({bw:g} kbps)", refs.meta_why)
        # the same weights on this machine's CPU
        if dev.type == "cuda":
            from rvqkit import Codec
            from rvqkit.weights import build_model

            cpu = Codec(build_model(self.weights.config, self.state), "cpu", self.weights.sha256)
            cpu_codes = [cpu.encode(x.numpy(), RATE, bandwidth=BANDWIDTH).codes[0] for x in sig]
            bad, total = differ_codes(alone[BANDWIDTH], cpu_codes)
            R.fig("agreement.vs_rvqkit_cpu", [bad, total])
            R.row(name, "6 kbps: codes differing from rvqkit on this machine's CPU", share(bad, total))
            del cpu
        else:
            R.skip("agreement vs rvqkit on CPU", "the device is the CPU")
        # alone vs in a batch: the signals among mixed-length batch-mates
        fill = mixed_signals(s.batch_items - s.signals, 1.0, max(2.0, s.signal_seconds * 1.5), seed=77)
        batch = list(fill)
        where = [int(k * len(fill) / s.signals) + k for k in range(s.signals)]
        for k, pos in enumerate(where):
            batch.insert(pos, sig[k])
        enc = codec.encode([x.numpy() for x in batch], RATE, bandwidth=BANDWIDTH)
        in_batch = [enc.codes[pos, :, : int(enc.frame_lengths[pos])] for pos in where]
        bad, total = differ_codes(alone[BANDWIDTH], in_batch)
        R.fig("agreement.alone_vs_batch_codes", [bad, total])
        R.check(
            name, f"codes alone = in a batch of {len(batch)}", bad == 0, f"{share(bad, total)} differ", "0"
        )
        dec_batch = codec.decode_items(enc)
        same = 0
        for k, pos in enumerate(where):
            one = codec.encode(sig[k].numpy(), RATE, bandwidth=BANDWIDTH)
            same += int(torch.equal(codec.decode_items(one)[0], dec_batch[pos]))
        R.fig("agreement.alone_vs_batch_audio_identical", [same, s.signals])
        R.check(
            name,
            f"decoded audio alone = in a batch of {len(batch)}",
            same == s.signals,
            f"{same} of {s.signals} items bit-identical",
        )
        R.fig("agreement.audio_seconds", total_audio)

    # 6 ------------------------------------------------------------------------------------------------
    def precision(self) -> None:
        from rvqkit import Codec

        s, dev = self.sizes, self.device
        if not hasattr(self, "fp32_codes"):
            raise Skip("needs the agreement section's fp32 codes")
        items = signals(s.equal_items, s.equal_seconds, seed=100)
        lengths = [x.shape[-1] for x in items]
        audio_s = s.equal_items * s.equal_seconds
        for mode in ("fp32", "tf32", "bf16"):
            codec = Codec(self.codec.model, dev, self.weights.sha256, mode)
            codes = [codec.encode(x.numpy(), RATE, bandwidth=BANDWIDTH).codes[0] for x in self.signals]
            bad, total = differ_codes(self.fp32_codes, codes)
            engine = codec.engine()
            enc_s, enc = timed(lambda engine=engine: engine.encode(items, self.n_q), s.repeats)
            dec_s, _ = timed(
                lambda engine=engine, enc=enc: engine.decode(
                    [e.codes for e in enc], [None] * len(enc), lengths
                ),
                s.repeats,
            )
            R.fig(f"precision.{mode}.codes_moved_vs_fp32", [bad, total])
            R.fig(f"precision.{mode}.encode_xrt", audio_s / enc_s)
            R.fig(f"precision.{mode}.decode_xrt", audio_s / dec_s)
            R.row(
                f"precision {mode}",
                f"codes moved vs fp32 ({s.signals} × {s.signal_seconds:g} s); "
                f"{s.equal_items} × {s.equal_seconds:g} s encode / decode",
                f"{share(bad, total)}; {xrt(audio_s, enc_s)} / {xrt(audio_s, dec_s)}",
                "–",
                "fp32: 0" if mode == "fp32" else "measured, documented",
            )
            print(
                f"  {mode}: {share(bad, total)} codes moved; encode {xrt(audio_s, enc_s)}, decode {xrt(audio_s, dec_s)}"
            )

    # 7 ------------------------------------------------------------------------------------------------
    def compile_trial(self, started: float) -> None:
        args = self.args
        if args.compile == "off" or (args.compile == "auto" and self.device.type != "cuda"):
            raise Skip("not run on CPU (--compile on runs it; --compile-backend eager for a quick trial)")
        left = TIME_BUDGET - (time.perf_counter() - started)
        limit = min(args.compile_timeout, left)
        if limit < 30:
            raise Skip(f"only {left:.0f} s of the {TIME_BUDGET:.0f} s budget left")
        streams = min(self.sizes.streams, 256 if self.smoke else self.sizes.streams)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--compile-child",
            json.dumps({"streams": streams, "backend": args.compile_backend, "device": str(self.device)}),
        ]
        note = ""
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=_child_env())
            stdout, stderr, failed = proc.stdout, proc.stderr, proc.returncode != 0
        except subprocess.TimeoutExpired as e:  # keep what it measured before (one JSON line per stage)
            stdout, stderr, failed = _text(e.stdout), _text(e.stderr), True
            note = f"stopped after {limit:.0f} s; "
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        if not lines:
            tail = (stderr.strip().splitlines() or ["no output"])[-1]
            raise Skip(f"torch.compile trial: {note}nothing measured ({tail[:300]})")
        res = json.loads(lines[-1])
        if failed:
            res["note"] = note + "the trial did not finish; stages after the last one shown did not run"
            R.skip("compile (part)", res["note"])
        R.fig("compile", res)
        name = f"torch.compile of encode_step, {res['streams']} streams ({res['backend']})"
        R.row(name, "eager Engine.advance, ms", f"{res['eager_ms']:.2f} ms")
        for mode, r in res["modes"].items():
            if "error" in r:
                R.row(name, f"mode {mode}", f"failed: {r['error'][:150]}")
                continue
            exact = (
                "codes identical" if r["differ"] == 0 else f"{share(r['differ'], r['total'])} codes differ"
            )
            R.row(
                name,
                f"mode {mode}: Engine.advance, ms (first steps incl. compiling)",
                f"{r['ms']:.2f} ms ({r['first_s']:.1f} s); {exact}",
            )
        print(f"  {json.dumps(res)}")

    # 8 ------------------------------------------------------------------------------------------------
    def corpus(self) -> None:
        s, dev = self.sizes, self.device
        try:
            import pyarrow  # noqa: F401
            import soundfile  # noqa: F401
            from corpus_bench import make_signal as speech_like
            from corpus_bench import read_codes, writable_formats
        except Exception as e:
            raise Skip(f"needs soundfile and pyarrow ({type(e).__name__}: {e})") from None
        formats = {k: v for k, v in writable_formats().items() if k in ("wav", "flac", "ogg")}
        with tempfile.TemporaryDirectory(prefix="gpu_bench_corpus_") as tmp:
            folder, out = Path(tmp) / "corpus", Path(tmp) / "out"
            t0 = time.perf_counter()
            paths, audio_s = _generate(folder, s.files, s.file_min, s.file_max, formats, speech_like)
            gen_s = time.perf_counter() - t0
            model = self._model_folder(Path(tmp) / "model")
            cmd = [sys.executable, "-m", "rvqkit", "corpus", "encode", str(folder), str(out)]
            cmd += ["--model", model, "--bandwidth", f"{BANDWIDTH:g}", "--device", str(dev), "--quiet"]
            if dev.type == "cpu":  # as the check below: the LSTM batched across items, this process's threads
                cmd += ["--lstm-batch", str(CPU_LSTM_BATCH), "--threads", str(torch.get_num_threads())]
            free()
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
            wall = time.perf_counter() - t0
            if proc.returncode:
                raise RuntimeError(f"{' '.join(cmd[1:])} failed ({proc.returncode}): {proc.stderr[-1500:]}")
            counts = json.loads((out / "manifest.json").read_text())["counts"]
            m = re.search(r"RTF ([0-9.eE+-]+)", proc.stderr)
            pipeline = float(m.group(1)) * counts["audio_seconds"] if m else None
            got = read_codes(out)
            checked = self._corpus_codes(paths[:5], got)
        name = (
            f"corpus encode --device {dev}, {len(paths)} files {s.file_min:g}-{s.file_max:g} s "
            f"({', '.join(sorted(formats))}; 16-48 kHz; {audio_s / 60:.1f} min)"
        )
        R.fig("corpus.files", len(paths))
        R.fig("corpus.rows", counts["rows"])
        R.fig("corpus.errors", counts["errors"])
        R.fig("corpus.audio_seconds", counts["audio_seconds"])
        R.fig("corpus.generate_s", gen_s)
        R.fig("corpus.wall_s", wall)
        R.fig("corpus.pipeline_s", pipeline)
        R.row(
            name,
            "whole command, x real time",
            f"{xrt(counts['audio_seconds'], wall)} ({wall:.1f} s)",
            "–",
            "≥ 3,000×",
        )
        if pipeline:
            R.row(
                name,
                "pipeline (its RTF: no start-up, no model loading), x real time",
                f"{xrt(counts['audio_seconds'], pipeline)} ({pipeline:.1f} s)",
            )
        R.check(
            name,
            "every file encoded",
            counts["rows"] == len(paths) and counts["errors"] == 0,
            f"{counts['rows']} rows, {counts['errors']} errors",
        )
        if checked is not None:
            bad, total, files = checked
            R.check(
                name,
                f"corpus codes = Codec.encode alone ({files} files)",
                bad == 0,
                f"{share(bad, total)} differ",
            )
        print(f"  generated in {gen_s:.1f} s; command {wall:.1f} s; pipeline {pipeline} s; {counts}")

    def _model_folder(self, folder: Path) -> str:
        """The benchmark's weights as a Hugging Face folder (no random-weight build in the command);
        ``random-24khz`` (the same tensors, rebuilt) without transformers."""
        if self.refs.hf is None:
            return "random-24khz"
        self.refs.hf.save_pretrained(folder)
        return str(folder)

    def _corpus_codes(self, paths: list[Path], got: dict[str, np.ndarray]) -> tuple[int, int, int] | None:
        from rvqkit.audio import read_audio

        ours, theirs = [], []
        for p in paths:
            key = str(p.resolve())
            if key not in got:
                continue
            x, sr = read_audio(p)
            batch = CPU_LSTM_BATCH if self.device.type == "cpu" else 1  # ignored on a GPU
            ours.append(self.codec.encode(x, sr, bandwidth=BANDWIDTH, lstm_batch=batch).codes[0])
            theirs.append(torch.from_numpy(np.asarray(got[key], dtype=np.int64)))
        if not ours:
            R.skip("corpus codes check", "no file's path found in the Parquet output")
            return None
        bad, total = differ_codes(ours, theirs)
        return bad, total, len(ours)


def _generate(
    folder: Path, files: int, lo: float, hi: float, formats: dict[str, tuple[str, str]], synth: Callable
) -> tuple[list[Path], float]:
    """``files`` seeded files (formats, 16-48 kHz, mono or stereo, lo-hi s), written by threads."""
    import soundfile as sf

    folder.mkdir(parents=True)
    rng = np.random.default_rng(2026)
    exts = sorted(formats)
    plan = []
    for i in range(files):
        ext = exts[int(rng.integers(len(exts)))]
        sr = int((16000, 22050, 44100, 48000)[int(rng.integers(4))])
        ch = int(rng.integers(1, 3))
        plan.append((i, ext, sr, ch, float(rng.uniform(lo, hi))))

    def write(job: tuple[int, str, int, int, float]) -> Path:
        i, ext, sr, ch, seconds = job
        x = synth(int(seconds * sr), ch, sr, np.random.default_rng(i))
        path = folder / f"f{i:04d}_{sr}hz_{ch}ch.{ext}"
        sf.write(path, x, sr, format=formats[ext][0], subtype=formats[ext][1])
        return path

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        paths = list(pool.map(write, plan))
    return paths, sum(p[4] for p in plan)


def _text(out: bytes | str | None) -> str:
    """A child's captured output (``TimeoutExpired`` gives bytes even in text mode)."""
    if isinstance(out, bytes):
        return out.decode(errors="replace")
    return out or ""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), str(Path(__file__).resolve().parent)] + [env.get("PYTHONPATH", "")]
    )
    return env


# -- the compile trial (child process) ---------------------------------------------------------------------
def compile_child(spec: dict[str, Any]) -> None:
    """Live-stream engine steps eager, then with ``model.encode_step`` compiled (default mode, then
    ``reduce-overhead``: CUDA graphs); prints one JSON line: step ms and codes differing from eager."""
    from rvqkit.engine import Engine
    from rvqkit.weights import build_model, random_weights

    device = torch.device(spec["device"])
    w = random_weights("random-24khz")
    model = build_model(w.config, w.state_dict).to(device)
    n_q = w.config.n_q_for_bandwidth(BANDWIDTH)
    streams, backend = int(spec["streams"]), spec["backend"]
    steps, timed_from = 12, 8
    audio = 0.1 * torch.randn(streams, 1, steps * CHUNK, generator=torch.Generator().manual_seed(9))

    def run() -> tuple[list[float], float, torch.Tensor]:
        engine = Engine(model, device, "fp32", rows="batched", slots=streams, step=CHUNK)
        jobs = [engine.open_encoder(n_q) for _ in range(streams)]
        ms, t_start = [], time.perf_counter()
        first = 0.0
        for k in range(steps):
            for i, job in enumerate(jobs):
                job.push(audio[i, :, k * CHUNK : (k + 1) * CHUNK])
            sync()
            t0 = time.perf_counter()
            mark_step()
            engine.advance(jobs)
            sync()
            if k == timed_from - 1:
                first = time.perf_counter() - t_start
            if k >= timed_from:
                ms.append(1000 * (time.perf_counter() - t0))
        codes = torch.stack([torch.cat([p.codes[0] for p in j.collect()], dim=-1).cpu() for j in jobs])
        return ms, first, codes

    eager_ms, _, eager_codes = run()
    result: dict[str, Any] = {
        "streams": streams,
        "backend": backend,
        "torch": torch.__version__,
        "eager_ms": statistics.median(eager_ms),
        "modes": {},
    }
    print(json.dumps(result), flush=True)  # after each stage: a parent that stops it keeps these
    for mode in ("default", "reduce-overhead"):
        try:
            torch._dynamo.reset()
            compiled = torch.compile(EncodeStep(model), backend=backend, mode=mode, dynamic=False)
            model.encode_step = _cloned(compiled)
            ms, first, codes = run()
            result["modes"][mode] = {
                "ms": statistics.median(ms),
                "first_s": first,
                "differ": int((codes != eager_codes).sum())
                if codes.shape == eager_codes.shape
                else codes.numel(),
                "total": int(eager_codes.numel()),
            }
        except Exception as e:
            result["modes"][mode] = {
                "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            }
        finally:
            model.__dict__.pop("encode_step", None)  # back to the class's method
        print(json.dumps(result), flush=True)


def mark_step() -> None:
    """Tell CUDA graph trees (``reduce-overhead``) that a new step begins: last step's graph outputs
    may be overwritten (the engine has copied what it keeps: stacked states are concatenated anew)."""
    mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
    if mark is not None:
        mark()


def _cloned(compiled: Callable[..., Any]) -> Callable[..., Any]:
    """The compiled step, its codes copied out of the CUDA graph's memory (the next replay reuses it)."""
    from rvqkit.packets import CodePacket

    def step(x: torch.Tensor, state: Any, final: bool = False) -> Any:
        p = compiled(x, state, final)
        return CodePacket(p.codes.clone(), None if p.scales is None else p.scales.clone(), p.segment_frames)

    return step


class EncodeStep:
    """``model.encode_step`` as a plain callable for ``torch.compile`` (the model's own method stays)."""

    def __init__(self, model: Any) -> None:
        self.fn = type(model).encode_step
        self.model = model

    def __call__(self, x: torch.Tensor, state: Any, final: bool = False) -> Any:
        return self.fn(self.model, x, state, final)


# -- main --------------------------------------------------------------------------------------------------
def _tf32_settings() -> dict[str, Any]:
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    out = {"cudnn.allow_tf32": cudnn.allow_tf32, "matmul.allow_tf32": matmul.allow_tf32}
    for name, obj in (("cudnn.conv", getattr(cudnn, "conv", None)), ("matmul", matmul)):
        if hasattr(obj, "fp32_precision"):
            out[f"{name}.fp32_precision"] = obj.fp32_precision
    return out


def machine(device: torch.device) -> dict[str, Any]:
    def version(mod: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(mod)
        except Exception:
            return "absent"

    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "unknown"
    info = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "gpu": torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else "none (torch.cuda.is_available() is False)",
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        if device.type == "cuda"
        else None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "transformers": version("transformers"),
        "encodec": version("encodec"),
        "soundfile": version("soundfile"),
        "soxr": version("soxr"),
        "rvqkit_commit": commit or "unknown",
        "load_average": os.getloadavg(),
    }
    return info


def table() -> str:
    lines = ["| section | measurement | rvqkit | reference, same run | target |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in R.rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer mixed items, stream steps and corpus files")
    ap.add_argument("--out", type=Path, help="write every figure as JSON here")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:1, cpu")
    ap.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="the torch.compile trial (auto: on CUDA only)",
    )
    ap.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of the trial (eager: a quick CPU check)",
    )
    ap.add_argument("--compile-timeout", type=float, default=120.0, help="seconds the trial may take at most")
    ap.add_argument("--compile-child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated sections to leave out: equal,mixed,long,streams,agreement,precision,compile,corpus",
    )
    args = ap.parse_args(argv)
    if args.compile_child:
        compile_child(json.loads(args.compile_child))
        return 0

    started = time.perf_counter()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    smoke = device.type != "cuda"
    sizes = SMOKE if smoke else (QUICK if args.quick else FULL)
    info = machine(device)
    if smoke:
        print(f"*** {SMOKE_BANNER} ***")
        if "OMP_NUM_THREADS" not in os.environ:  # a smoke run on a shared CPU: one thread is the safe choice
            torch.set_num_threads(1)
    print(f"GPU: {info['gpu']}")
    print(json.dumps(info))
    print(f"sizes: {asdict(sizes)}", flush=True)
    tf32_before = _tf32_settings()

    bench = Bench(args, sizes, device, smoke)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    sections: list[tuple[str, Callable[[], None]]] = [
        ("equal", bench.equal),
        ("mixed", bench.mixed),
        ("long", bench.long_file),
        ("streams", bench.streams),
        ("agreement", bench.agreement),
        ("precision", bench.precision),
        ("corpus", bench.corpus),
        ("compile", lambda: bench.compile_trial(started)),
    ]
    for name, fn in sections:
        if name in skip:
            R.skip(name, "--skip")
            continue
        section(name, fn)

    tf32_after = _tf32_settings()
    R.check(
        "process",
        "rvqkit left the global TF32 settings as it found them",
        tf32_before == tf32_after,
        str(tf32_after),
    )
    total = time.perf_counter() - started
    title = SMOKE_BANNER if smoke else f"GPU table: {info['gpu']}"
    print(f"\n# {title}\n")
    print(
        f"torch {info['torch']} (CUDA {info['cuda']}), transformers {info['transformers']}, encodec {info['encodec']}, "
        f"rvqkit {info['rvqkit_commit']}; {sizes.mixed_items} mixed items; fp32, TF32 off; total {total:.0f} s\n"
    )
    print(table())
    for what, why in R.skipped.items():
        print(f"skipped: {what}: {why}")
    for what, why in R.failed.items():
        print(f"FAILED: {what}: {why}")
    if smoke:
        print(f"\n*** {SMOKE_BANNER} ***")
    if args.out:
        result = {
            "smoke": smoke,
            "machine": info,
            "sizes": asdict(sizes),
            "figures": R.figures,
            "checks": R.checks,
            "skipped": R.skipped,
            "failed": R.failed,
            "table": table(),
            "total_seconds": total,
            "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.out}")
    return 1 if R.failed or not all(R.checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
