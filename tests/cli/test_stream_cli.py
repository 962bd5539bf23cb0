"""``rvqkit stream`` in a pipe: raw PCM on stdin, codes or PCM on stdout, equal to offline."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from rvqkit import Codec


def _run(args, stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rvqkit", "stream", *map(str, args)], input=stdin, capture_output=True
    )


def test_stream_codes_and_pcm_equal_offline(meta_24k):
    _, path = meta_24k
    codec = Codec.from_pretrained(path)
    rng = np.random.default_rng(4)
    pcm = (np.sin(np.arange(int(1.7 * 24000)) * 0.05) * 9000 + rng.normal(0, 500, int(1.7 * 24000))).astype(
        "<i2"
    )
    offline = codec.encode(pcm, 24000, bandwidth=3.0)
    res = _run(["-", "--model", path, "-b", "3", "--chunk-ms", "80"], pcm.tobytes())
    assert res.returncode == 0, res.stderr.decode()
    codes = torch.tensor([json.loads(line) for line in res.stdout.decode().splitlines()]).t()[None]
    assert codes.shape == offline.codes.shape
    assert int((codes != offline.codes).any(dim=1).sum()) <= 1  # near-tie frames only (see test_stream)

    res = _run(["-", "--model", path, "-b", "3", "--decode", "--format", "s16le"], pcm.tobytes())
    assert res.returncode == 0, res.stderr.decode()
    out = np.frombuffer(res.stdout, dtype="<i2")
    ref = np.round(np.clip(codec.decode(offline)[0, 0].numpy(), -1, 1) * 32767)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 2


def test_stream_bad_input(meta_24k, tmp_path):
    _, path = meta_24k
    res = _run(["-", "--model", path], b"")
    assert res.returncode == 1 and b"no audio" in res.stderr and b"Traceback" not in res.stderr
    nan = np.full(1000, np.nan, dtype="<f4").tobytes()
    res = _run(["-", "--model", path, "--format", "f32le"], nan)
    assert res.returncode == 1 and b"NaN" in res.stderr
    res = _run([tmp_path / "missing.raw", "--model", path], b"")
    assert res.returncode == 1 and b"no such file" in res.stderr
    res = _run(["-", "--model", path, "--rate", "0"], b"")
    assert res.returncode == 1 and b"must be positive" in res.stderr


def test_pcm_helpers_shared_with_the_server():
    """rvqkit.pcm: whole frames out of any cuts, the formats' scaling, and a resampled stream that does
    not depend on how it was cut."""
    from rvqkit.pcm import FrameSplitter, StreamResampler, float_to_pcm, frame_bytes, pcm_to_float

    rng = np.random.default_rng(0)
    x = rng.uniform(-1.2, 1.2, (2, 1001)).astype(np.float32)  # [channels, samples], some past full scale
    for fmt in ("s16le", "f32le"):
        raw = float_to_pcm(x, fmt)
        assert len(raw) == frame_bytes(fmt, 2) * 1001
        splitter, pieces, pos = FrameSplitter(frame_bytes(fmt, 2)), [], 0
        while pos < len(raw):
            n = int(rng.integers(1, 50))
            pieces.append(splitter.split(raw[pos : pos + n]))
            pos += n
        assert splitter.carry == b"" and b"".join(pieces) == raw
        y = pcm_to_float(raw, fmt, 2)
        assert y.shape == x.shape and y.dtype == np.float32
        if fmt == "f32le":
            assert np.array_equal(y, x)
        else:  # round(x * 32767), saturated; read back / 32768
            assert np.array_equal(y * 32768, np.clip(np.round(x * 32767), -32768, 32767))
            clipped = pcm_to_float(float_to_pcm(x, fmt, clip=True), fmt, 2)
            assert np.abs(clipped).max() <= 32767 / 32768

    whole = StreamResampler(16000, 24000, 2).process(x, last=True)
    r = StreamResampler(16000, 24000, 2)
    cuts = [0, 1, 160, 161, 700, 1001]
    parts = [r.process(x[:, a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    parts.append(r.process(x[:, :0], last=True))
    chunked = np.concatenate(parts, axis=-1)
    assert chunked.shape == whole.shape == (2, 1502)
    assert np.abs(chunked - whole).max() <= 1e-6
    assert StreamResampler(24000, 24000, 2).process(x) is x
