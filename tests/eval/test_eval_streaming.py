"""Block-by-block metrics (rvqkit.eval.streaming) give what the whole-array functions give, for any
block sizes, lengths, channels and rates, the same known answers, and the same skips; and
``rvqkit roundtrip`` scores its output that way."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from rvqkit.eval import metrics as M
from rvqkit.eval.streaming import (
    STREAMING_METRICS,
    BlockScores,
    MelDistanceStream,
    SiSdrStream,
    StftDistanceStream,
    score_blocks,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: many small STFTs, much faster on a busy machine (more threads than free cores
    spin)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


WHOLE = {
    "si_sdr": lambda r, e, sr: M.si_sdr(r, e),
    "mel_distance": M.mel_distance,
    "stft_distance": M.stft_distance,
}


def blocks(ref: np.ndarray, est: np.ndarray, sizes: list[int]):
    """(ref, est) pairs cut at sizes taken in turn (the last block is what is left)."""
    i, k = 0, 0
    while i < ref.shape[-1]:
        n = sizes[k % len(sizes)]
        yield ref[..., i : i + n], est[..., i : i + n]
        i, k = i + n, k + 1


def pair(n: int, channels: int, seed: int, noise: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = (0.3 * rng.standard_normal((channels, n))).astype(np.float32)
    ref += np.float32(0.05)  # a mean: SI-SDR removes it
    est = (0.8 * ref + noise * rng.standard_normal((channels, n))).astype(np.float32)
    return ref, est


def close(got: float, want: float, rel: float = 1e-5) -> bool:
    return abs(got - want) <= rel * max(1.0, abs(want))


@pytest.mark.parametrize("sr", [16000, 24000, 48000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize(
    "n, sizes",
    [
        (48000 + 17, [48000 + 17]),  # one block
        (48000 + 17, [1000]),
        (30011, [1, 2, 3, 4097, 333]),  # blocks smaller than a hop, and uneven
        (5000, [700, 1300]),
        (1500, [100]),  # shorter than 48 kHz's frames: the whole-array function scores it
        (300, [64]),
    ],
)
def test_streaming_equals_whole_array(sr, channels, n, sizes):
    ref, est = pair(n, channels, seed=n + channels)
    got = score_blocks(blocks(ref, est, sizes), sr)
    for name in STREAMING_METRICS:
        want = WHOLE[name](ref, est, sr)
        assert close(got[name], want), (name, got[name], want)


def test_float64_input_and_tensors():
    ref, est = pair(20000, 1, seed=5)
    ref64, est64 = ref.astype(np.float64), est.astype(np.float64)
    got = score_blocks(blocks(ref64, est64, [3000]), 24000, ("si_sdr",))
    assert close(got["si_sdr"], M.si_sdr(ref64, est64), 1e-9)
    t = score_blocks(blocks(torch.from_numpy(ref[0]), torch.from_numpy(est[0]), [4000]), 24000)
    assert close(t["mel_distance"], M.mel_distance(ref, est, 24000))


def test_identical_and_silent_estimates():
    ref, _ = pair(24000, 2, seed=1)
    same = score_blocks(blocks(ref, ref.copy(), [5000]), 24000)
    assert same == {"si_sdr": math.inf, "mel_distance": 0.0, "stft_distance": 0.0}
    silent = score_blocks(blocks(ref, np.zeros_like(ref), [5000]), 24000)
    assert silent["si_sdr"] == -math.inf == M.si_sdr(ref, np.zeros_like(ref))
    assert silent["mel_distance"] > 50 and silent["stft_distance"] > 1


@pytest.mark.parametrize("snr", [10.0, 20.0])
def test_si_sdr_of_white_noise_at_a_known_snr(snr):
    rng = np.random.default_rng(4)
    x = np.sin(2 * np.pi * 220 * np.arange(5 * 16000) / 16000).astype(np.float64)
    noise = rng.standard_normal(x.shape)
    noise -= noise.mean()
    noise -= (noise @ x) / (x @ x) * x  # orthogonal to x: the SNR is exactly the SI-SDR
    noise *= math.sqrt((x @ x) / (noise @ noise) / 10 ** (snr / 10))
    s = SiSdrStream()
    for r, e in blocks(x, 0.5 * (x + noise), [7919]):
        s.update(r, e)
    assert abs(s.value() - snr) < 0.1


def test_skips_as_the_whole_array_functions():
    ref, est = pair(30000, 1, seed=2)
    bad = est.copy()
    bad[0, 12345] = np.nan
    got = score_blocks(blocks(ref, bad, [4000]), 24000)
    assert all(isinstance(v, M.MetricSkipped) and "NaN" in str(v) for v in got.values()), got
    silent = np.zeros_like(ref)
    got = score_blocks(blocks(silent, est, [4000]), 24000)
    assert "silent original" in str(got["si_sdr"]) and "silent original" in str(got["stft_distance"])
    assert close(got["mel_distance"], M.mel_distance(silent, est, 24000))  # defined for silence
    empty = BlockScores(24000).results()
    assert all("empty" in str(v) for v in empty.values())


def test_bad_blocks_are_refused():
    s = MelDistanceStream(24000)
    with pytest.raises(ValueError, match="differ in shape"):
        s.update(np.zeros((1, 10)), np.zeros((1, 11)))
    s.update(np.ones((1, 10)), np.ones((1, 10)))
    with pytest.raises(ValueError, match="channels"):
        s.update(np.ones((2, 10)), np.ones((2, 10)))


def test_memory_does_not_hold_the_signal():
    """After 60 s fed in 1 s blocks, what the framed metrics keep is a few frames, not the signal."""
    sr = 24000
    mel, stft = MelDistanceStream(sr), StftDistanceStream(sr)
    rng = np.random.default_rng(0)
    for _ in range(60):
        r = rng.standard_normal((1, sr)).astype(np.float32)
        mel.update(r, 0.5 * r)
        stft.update(r, 0.5 * r)
    kept = [f.buf.shape[-1] for s in (mel, stft) for f in s.framers]
    assert max(kept) < 2 * 2048 and mel.short == [] and stft.short == []


# -- rvqkit roundtrip's quality line ------------------------------------------------------------------------
def test_roundtrip_quality_line_is_the_whole_file_score(tmp_path):
    """The line's SI-SDR and log-mel distance are the whole-array metrics of the written output against
    the input at the model's rate (read here independently)."""
    from rvqkit import Codec
    from rvqkit.audio import resample

    src = tmp_path / "in.wav"
    sr_in = 16000
    x = pair(int(2.5 * sr_in), 1, seed=9)[0]
    sf.write(src, x.T, sr_in, subtype="FLOAT")
    out = tmp_path / "out.wav"
    res = subprocess.run(
        [sys.executable, "-m", "rvqkit", "roundtrip", src, out, "-m", "random-24khz", "--threads", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("quality:"))
    codec = Codec.from_pretrained("random-24khz")
    ref = resample(x, sr_in, codec.sample_rate)
    est = sf.read(out, dtype="float32", always_2d=True)[0].T
    assert est.shape == ref.shape
    want_sdr = M.si_sdr(ref, est)
    want_mel = M.mel_distance(ref, est, codec.sample_rate)
    got = re.fullmatch(r"quality: SI-SDR (\S+) dB, log-mel distance (\S+) dB", line)
    assert got, line
    assert abs(float(got[1]) - want_sdr) <= 0.006 and abs(float(got[2]) - want_mel) <= 0.006, line
