"""Fuzz: mutated ``.ecdc`` files (bit flips, byte edits, cuts, insertions, header rewrites) must decode
or fail with :class:`rvqkit.bitstream.BitstreamError`, nothing else, for both models with and without
the LM. Budget fixed (derandomized, no deadline) so CI runs the same inputs every time."""

from __future__ import annotations

import io
import json
import struct

import pytest
import torch
from conftest import make_signal
from ecdc_helpers import build_meta_lm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rvqkit
from rvqkit.bitstream import BitstreamError, read_ecdc, write_ecdc
from rvqkit.lm import load_lm, torch_threads

EXAMPLES = 300  # per seed file (4 seed files: 1200 inputs in all)
COUNTER = {"inputs": 0, "decoded": 0, "rejected": 0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with torch_threads(1):  # frame-by-frame LM work: one thread is fastest on a busy machine
        yield


@pytest.fixture(scope="module")
def seeds(meta_encodec, meta_24k, meta_48k, tmp_path_factory):
    """Small valid files: (bytes, lm) for 24/48 kHz, packed and LM-coded."""
    folder = tmp_path_factory.mktemp("fuzz_lms")
    out = {}
    for which, (_model, path) in (("24", meta_24k), ("48", meta_48k)):
        codec = rvqkit.Codec.from_pretrained(path)
        _, lm_path = build_meta_lm(meta_encodec, which, 21, folder)
        lm = load_lm(lm_path)
        n = int(0.1 * codec.sample_rate)  # 8-15 frames: each LM-coded input decodes in milliseconds
        x = make_signal(n, codec.channels, codec.sample_rate, seed=2)
        enc = codec.encode(x, codec.sample_rate, bandwidth=3.0 if which == "24" else 6.0)
        for use_lm in (False, True):
            fo = io.BytesIO()
            write_ecdc(fo, enc, lm=lm if use_lm else None)
            out[(which, use_lm)] = (fo.getvalue(), lm)
    return out


def _mutations():
    flip = st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7))
    setb = st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255))
    cut = st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0))
    insert = st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8))
    header = st.tuples(
        st.just("meta"),
        st.sampled_from(["m", "al", "nc", "lm", "extra"]),
        st.one_of(
            st.integers(-(2**70), 2**70),
            st.booleans(),
            st.none(),
            st.text(max_size=12),
            st.floats(allow_nan=True),
            st.sampled_from(["encodec_24khz", "encodec_48khz", 48000, 4800000000, 32, 16, 0, 1]),
        ),
    )
    length = st.tuples(st.just("jsonlen"), st.integers(0, 2**32 - 1), st.just(0))
    return st.lists(st.one_of(flip, setb, cut, insert, header, length), min_size=1, max_size=4)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, a, v in ops:
        if op == "meta":
            size = struct.unpack("!I", bytes(b[5:9]))[0] if len(b) >= 9 else 0
            try:
                meta = json.loads(bytes(b[9 : 9 + size]))
            except ValueError:
                continue
            if not isinstance(meta, dict):
                continue
            meta[a] = v
            raw = json.dumps(meta).encode()
            b = bytearray(b[:5]) + struct.pack("!I", len(raw)) + raw + b[9 + size :]
        elif op == "jsonlen":
            b[5:9] = struct.pack("!I", a)
        elif not b:
            continue
        elif op == "flip":
            b[a % len(b)] ^= 1 << v
        elif op == "set":
            b[a % len(b)] = v
        elif op == "cut":
            del b[a % len(b) :]
        elif op == "insert":
            b[a % (len(b) + 1) : a % (len(b) + 1)] = v
    return bytes(b)


@pytest.mark.parametrize("use_lm", [False, True], ids=["packed", "lm"])
@pytest.mark.parametrize("which", ["24", "48"])
def test_mutated_files_raise_only_bitstream_error(seeds, which, use_lm):
    data, lm = seeds[(which, use_lm)]
    assert read_ecdc(io.BytesIO(data), lm=lm if use_lm else None).n_q > 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(ops=_mutations())
    def run(ops):
        bad = mutate(data, ops)
        COUNTER["inputs"] += 1
        try:
            enc = read_ecdc(io.BytesIO(bad), lm=lm)
        except BitstreamError:
            COUNTER["rejected"] += 1
            return
        COUNTER["decoded"] += 1
        # What decodes is a consistent Encoded value: right model facts, codes in range, frames match.
        cfg = rvqkit.config.PRESETS[enc.model]
        assert enc.codes.shape[1] <= cfg.num_codebooks
        assert enc.codes.numel() == 0 or 0 <= int(enc.codes.min()) <= int(enc.codes.max()) < cfg.codebook_size
        assert int(enc.frame_lengths[0]) == enc.codes.shape[-1]
        if cfg.normalize:
            assert enc.scales is not None and torch.isfinite(enc.scales).all() and (enc.scales > 0).all()

    run()


def test_fuzz_count_report():
    """Runs after the fuzz tests (file order); prints how many inputs they ran (see docs/ecdc.md)."""
    if COUNTER["inputs"]:
        print(
            f"\necdc fuzz: {COUNTER['inputs']} inputs, {COUNTER['rejected']} rejected, {COUNTER['decoded']} decoded"
        )
        assert COUNTER["inputs"] >= 4 * EXAMPLES * 0.9
