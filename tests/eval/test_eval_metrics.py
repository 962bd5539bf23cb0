"""The evaluation metrics: known answers (identical signals, white noise at a set SNR, noise rising),
agreement with independent implementations (torchmetrics' SI-SDR, auraloss' multi-resolution STFT
loss, transformers' log-mel spectrogram), and bad inputs skipped with a reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rvqkit.eval import metrics as M

SR = 16000


def speechlike(seconds: float = 3.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A voiced-speech stand-in: a 120-200 Hz gliding harmonic tone with a 4 Hz syllable envelope and
    short pauses (STOI and PESQ need energy that comes and goes, as in speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(h * phase) / h for h in range(1, 20) if h * 200 < sr / 2)
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    x = x * envelope + 0.001 * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def with_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    """``x`` plus white noise scaled to exactly ``snr_db`` dB below ``x``'s power."""
    n = np.random.default_rng(seed).standard_normal(x.shape)
    n *= math.sqrt((x.astype(np.float64) ** 2).sum() / (n**2).sum() / 10 ** (snr_db / 10))
    return (x + n).astype(np.float32)


def test_identical_signals_score_best():
    x = speechlike()
    assert M.si_sdr(x, x) == math.inf
    assert M.mel_distance(x, x, SR) == 0.0
    assert M.stft_distance(x, x, SR) == 0.0
    noisy = with_noise(x, 20)
    assert M.mel_distance(x, noisy, SR) > 0 and M.stft_distance(x, noisy, SR) > 0


@pytest.mark.parametrize("snr", [10.0, 20.0])
def test_si_sdr_of_white_noise_at_a_known_snr(snr):
    x = speechlike(seconds=5.0)
    # x has a small mean (removed by SI-SDR); put the noise against the zero-mean signal's power
    x = x - x.mean()
    assert abs(M.si_sdr(x, with_noise(x, snr)) - snr) < 0.1
    assert abs(M.si_sdr(x, 0.5 * with_noise(x, snr)) - snr) < 0.1  # scale-invariant


def test_si_sdr_against_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.audio")
    rng = np.random.default_rng(3)
    for _ in range(5):
        ref = rng.standard_normal((2, 4000)).astype(np.float32)
        est = (ref + rng.uniform(0.1, 2) * rng.standard_normal(ref.shape)).astype(np.float32)
        theirs = tm.scale_invariant_signal_distortion_ratio(
            torch.from_numpy(est).double(), torch.from_numpy(ref).double(), zero_mean=True
        )
        assert M.si_sdr(ref, est) == pytest.approx(float(theirs.mean()), abs=1e-6)


@pytest.mark.parametrize("sr", [24000, 48000])
def test_stft_distance_against_auraloss(sr):
    auraloss = pytest.importorskip("auraloss")
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((2, sr // 2)).astype(np.float32)
    est = (ref + 0.3 * rng.standard_normal(ref.shape)).astype(np.float32)
    res = M.stft_resolutions(sr)
    loss = auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=[r[0] for r in res], hop_sizes=[r[1] for r in res], win_lengths=[r[2] for r in res]
    )
    theirs = float(loss(torch.from_numpy(est)[None], torch.from_numpy(ref)[None]))
    assert M.stft_distance(ref, est, sr) == pytest.approx(theirs, rel=1e-4)
    if sr == 24000:  # at 24 kHz the resolutions are auraloss' defaults
        default = float(
            auraloss.freq.MultiResolutionSTFTLoss()(torch.from_numpy(est)[None], torch.from_numpy(ref)[None])
        )
        assert M.stft_distance(ref, est, sr) == pytest.approx(default, rel=1e-4)


@pytest.mark.parametrize("sr", [24000, 48000])
def test_mel_distance_against_transformers_spectrogram(sr):
    """transformers' numpy spectrogram and mel filter bank: an independent log-mel of the same definition."""
    audio_utils = pytest.importorskip("transformers.audio_utils")
    from rvqkit.inspector import stft_size

    rng = np.random.default_rng(5)
    ref = rng.standard_normal(sr // 2).astype(np.float32) * 0.1
    est = (ref + 0.05 * rng.standard_normal(ref.shape)).astype(np.float32)
    n_fft = stft_size(sr)
    fb = audio_utils.mel_filter_bank(n_fft // 2 + 1, 80, 0.0, sr / 2, sr, norm=None, mel_scale="htk")

    def their_log_mel(x):
        return audio_utils.spectrogram(
            x.astype(np.float64),
            audio_utils.window_function(n_fft, "hann"),
            frame_length=n_fft,
            hop_length=n_fft // 4,
            power=2.0,
            mel_filters=fb,
            log_mel="dB",
            dtype=np.float64,
        )

    theirs = float(np.abs(their_log_mel(ref) - their_log_mel(est)).mean())
    assert M.mel_distance(ref, est, sr) == pytest.approx(theirs, rel=1e-3)


def test_pesq_falls_as_noise_rises():
    pytest.importorskip("pesq", reason="PESQ needs the 'pesq' package (pip install 'rvqkit[eval]')")
    x = speechlike()
    clean = M.pesq_wb(x, x, SR)
    scores = [M.pesq_wb(x, with_noise(x, snr), SR) for snr in (30, 20, 10, 0)]
    assert clean == pytest.approx(4.64, abs=0.01)
    assert all(a > b for a, b in zip([clean, *scores], scores, strict=False)), scores


def test_stoi_falls_as_noise_rises():
    pytest.importorskip("pystoi", reason="STOI needs the 'pystoi' package (pip install 'rvqkit[eval]')")
    x = speechlike()
    clean = M.stoi(x, x, SR)
    scores = [M.stoi(x, with_noise(x, snr), SR) for snr in (10, 0, -10, -20)]
    assert clean == pytest.approx(1.0, abs=1e-6)
    assert all(a > b for a, b in zip([clean, *scores], scores, strict=False)), scores


def test_pesq_resamples_other_rates():
    pytest.importorskip("pesq")
    x24 = speechlike(sr=24000)
    assert M.pesq_wb(x24, with_noise(x24, 10), 24000) < M.pesq_wb(x24, with_noise(x24, 30), 24000)


def test_bad_inputs_are_skipped_with_a_reason():
    x = speechlike()
    silent = np.zeros_like(x)
    with pytest.raises(M.MetricSkipped, match="silent original"):
        M.si_sdr(silent, x)
    nan = x.copy()
    nan[100] = np.nan
    with pytest.raises(M.MetricSkipped, match="NaN"):
        M.mel_distance(nan, x, SR)
    out = M.score(silent, x, SR, max_lag=100)
    assert math.isnan(out["si_sdr"]) and "si_sdr: silent original" in out["skipped"]
    assert out["mel_distance"] > 0  # defined for silence: the report keeps it
    short = x[: SR // 10]
    out = M.score(short, short, SR, metrics=("si_sdr", "pesq"))
    if M.available("pesq"):
        assert math.isnan(out["pesq"]) and "too short for PESQ" in out["skipped"]
    out = M.score(nan, x, SR)
    for name in M.BUILTIN:
        assert math.isnan(out[name]) and f"{name}: NaN or Inf samples" in out["skipped"]


def test_stoi_too_short_is_skipped():
    pytest.importorskip("pystoi")
    x = speechlike(seconds=0.2)
    out = M.score(x, with_noise(x, 10), SR, metrics=("stoi",))
    assert math.isnan(out["stoi"]) and "too short for STOI" in out["skipped"]


def test_unavailable_metric_is_nan_and_named():
    assert M.available("si_sdr")
    assert "pip install" in M.why_unavailable("pesq") or M.why_unavailable("pesq")
    if not M.available("visqol"):
        out = M.score(speechlike(), speechlike(), SR, metrics=("visqol",))
        assert math.isnan(out["visqol"])
        assert "ViSQOL" in M.why_unavailable("visqol")


@pytest.mark.parametrize("lag", [0, 37, -12])
def test_delay_is_found_and_aligned_metrics_recover(lag):
    x = speechlike(seconds=2.0)
    delayed = np.roll(x, lag)
    assert M.estimate_delay(x, delayed, 200) == lag
    out = M.score(x, delayed, SR, metrics=("si_sdr", "mel_distance"), max_lag=200)
    assert out["delay_samples"] == lag
    if lag:
        assert out["si_sdr_aligned"] > 40 > out["si_sdr"]
    else:
        assert out["si_sdr_aligned"] == out["si_sdr"] == math.inf


def test_stereo_si_sdr_is_the_channel_mean():
    x = np.stack([speechlike(seed=1), speechlike(seed=2)])
    x = x - x.mean(axis=-1, keepdims=True)
    y = np.stack([with_noise(x[0], 10, seed=3), with_noise(x[1], 20, seed=4)])
    assert M.si_sdr(x, y) == pytest.approx((M.si_sdr(x[0], y[0]) + M.si_sdr(x[1], y[1])) / 2)
