"""Objective quality metrics of a reconstruction against its original.

Every metric takes float arrays ``[samples]`` or ``[channels, samples]`` of equal shape at one sample
rate (Hz), and returns a float, or raises :class:`MetricSkipped` with the reason when the metric is
undefined for the input (a silent original, too short for PESQ, ...): the report shows the reason, never
a made-up number.

Written here (a few lines each, checked in the tests against independent implementations):

- :func:`si_sdr`: scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), with the mean
  removed, per channel, averaged over channels. Higher is better; ``inf`` for identical signals.
- :func:`mel_distance`: mean absolute difference of the log-mel spectrograms in dB
  (:func:`rvqkit.inspector.log_mel`: 80 HTK mel bands from 0 Hz to Nyquist, Hann window of about 43 ms
  (1024 samples at 24 kHz, 2048 at 48 kHz), hop a quarter of it, power in dB with a -100 dB floor).
  Lower is better; 0 for identical signals.
- :func:`stft_distance`: multi-resolution STFT distance (Yamamoto et al. 2020, as auraloss'
  ``MultiResolutionSTFTLoss``): spectral convergence plus mean L1 distance of log magnitudes, averaged
  over FFT sizes 1024/2048/512, hops 120/240/50, windows 600/1200/240 samples at 24 kHz (scaled with
  the sample rate). Lower is better; 0 for identical signals; skipped for a silent original.

From optional packages (``pip install 'rvqkit[eval]'``), on the channel average:

- :func:`pesq_wb`: wide-band PESQ (ITU-T P.862.2, MOS-LQO 1.04..4.64) at 16 kHz, package ``pesq``.
- :func:`stoi`: short-time objective intelligibility (0..1) at 10 kHz, package ``pystoi``.
- :func:`visqol`: ViSQOL speech mode (MOS-LQO 1..5) through Google's ``visqol`` Python bindings, if built.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..audio import resample
from ..inspector import log_mel

#: Every metric the report can hold, in report order; higher is better for these:
METRICS = ("si_sdr", "mel_distance", "stft_distance", "pesq", "stoi", "visqol")
HIGHER_IS_BETTER = {"si_sdr": True, "mel_distance": False, "stft_distance": False}
HIGHER_IS_BETTER.update(pesq=True, stoi=True, visqol=True)
UNITS = {
    "si_sdr": "dB",
    "mel_distance": "dB",
    "stft_distance": "",
    "pesq": "MOS",
    "stoi": "",
    "visqol": "MOS",
}
#: Metrics written here (always available) and the optional ones with the package each needs.
BUILTIN = ("si_sdr", "mel_distance", "stft_distance")
OPTIONAL_PACKAGES = {"pesq": "pesq", "stoi": "pystoi", "visqol": "visqol"}

SILENCE = 1e-8  # peak amplitude under which a signal counts as silent
PESQ_RATE = 16000
STOI_RATE = 10000  # pystoi's own rate; resampled here with soxr (pystoi's resampler is ~10x slower)
PESQ_MIN_SECONDS = 0.25  # the pesq package refuses shorter buffers (BufferTooShortError)
STFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))  # (n_fft, hop, window) at 24 kHz
STFT_EPS = 1e-8


class MetricSkipped(Exception):
    """A metric that is undefined for this input; the message is the reason shown in the report."""


def _channels(x: np.ndarray | torch.Tensor) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    return a[None] if a.ndim == 1 else a


def _check_pair(reference: np.ndarray, estimate: np.ndarray) -> None:
    if reference.shape != estimate.shape:
        raise ValueError(f"reference {reference.shape} and estimate {estimate.shape} differ in shape")
    if reference.shape[-1] == 0:
        raise MetricSkipped("empty signal")
    if not (np.isfinite(reference).all() and np.isfinite(estimate).all()):
        raise MetricSkipped("NaN or Inf samples")


def _mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=0)


_CACHE: OrderedDict[tuple, Any] = OrderedDict()
CACHE_SIZE = 16


def _of_reference(tag: str, reference: np.ndarray, sample_rate: int, compute: Callable[[], Any]) -> Any:
    """``compute()``, remembered for this reference signal (by content hash): every setting of an item
    compares with the same original, so its spectra and resampled copies are computed once per process."""
    key = (tag, sample_rate, reference.shape, hashlib.blake2b(reference.tobytes(), digest_size=16).digest())
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = _CACHE[key] = compute()
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


# -- written here ----------------------------------------------------------------------------------------
def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB of ``estimate`` against ``reference`` (mean removed; per channel, then
    averaged). ``inf`` when identical, ``-inf`` when the estimate is silent or orthogonal."""
    ref, est = _channels(reference), _channels(estimate)
    _check_pair(ref, est)
    if np.abs(ref).max() <= SILENCE:
        raise MetricSkipped("silent original")
    ref = ref - ref.mean(axis=-1, keepdims=True)
    est = est - est.mean(axis=-1, keepdims=True)
    out = []
    for r, e in zip(ref, est, strict=True):
        target = (e @ r) / (r @ r) * r
        noise = e - target
        t, n = target @ target, noise @ noise
        if t == 0:  # a silent estimate too (then the noise is 0 as well)
            out.append(-math.inf)
        elif n == 0:
            out.append(math.inf)
        else:
            out.append(10 * math.log10(t / n))
    return float(np.mean(out))


def mel_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Mean absolute difference in dB of the log-mel spectrograms (parameters in the module docstring)."""
    ref, est = _channels(reference), _channels(estimate)
    _check_pair(ref, est)
    a = _of_reference("mel", ref, sample_rate, lambda: log_mel(ref.astype(np.float32), sample_rate))
    b = log_mel(est.astype(np.float32), sample_rate)
    return float((a - b).abs().mean())


def stft_resolutions(sample_rate: int) -> list[tuple[int, int, int]]:
    """(n_fft, hop, window) in samples of :func:`stft_distance` at ``sample_rate`` Hz."""
    f = sample_rate / 24000
    return [(round(n * f), round(h * f), round(w * f)) for n, h, w in STFT_RESOLUTIONS]


def _magnitude(x: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    if x.shape[-1] <= n_fft // 2:  # reflect padding needs more samples than half the FFT
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.shape[-1]))
    spec = torch.stft(x, n_fft, hop, win, torch.hann_window(win, dtype=x.dtype), return_complex=True)
    return (spec.real.square() + spec.imag.square()).clamp_min(STFT_EPS).sqrt()


def stft_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Multi-resolution STFT distance: per resolution, spectral convergence
    ``||Y - X||_F / ||Y||_F`` plus mean ``|log Y - log X|`` of the magnitudes (floored at 1e-4), averaged
    over the resolutions of :func:`stft_resolutions` (channels treated as separate signals)."""
    ref, est = _channels(reference), _channels(estimate)
    _check_pair(ref, est)
    if np.abs(ref).max() <= SILENCE:
        raise MetricSkipped("silent original")
    y = torch.from_numpy(ref.astype(np.float32))
    x = torch.from_numpy(est.astype(np.float32))
    total = 0.0
    res = stft_resolutions(sample_rate)
    for n_fft, hop, win in res:
        ym = _of_reference(
            f"stft{n_fft}", ref, sample_rate, functools.partial(_magnitude, y, n_fft, hop, win)
        )
        xm = _magnitude(x, n_fft, hop, win)
        sc = torch.linalg.norm(ym - xm) / torch.linalg.norm(ym)
        total += float(sc + (ym.log() - xm.log()).abs().mean())
    return total / len(res)


# -- optional packages -------------------------------------------------------------------------------------
def available(metric: str) -> bool:
    """Whether ``metric`` can run here (its package imports)."""
    if metric in BUILTIN:
        return True
    if metric == "visqol":
        return _visqol_api() is not None
    try:
        importlib.import_module(OPTIONAL_PACKAGES[metric])
    except ImportError:
        return False
    return True


def why_unavailable(metric: str) -> str:
    """How to get a metric that :func:`available` says cannot run."""
    if metric == "visqol":
        return (
            "ViSQOL needs Google's visqol Python bindings (built with Bazel from github.com/google/visqol); "
            "no maintained PyPI package runs offline (pyvisqol downloads its library at import)"
        )
    return f"needs the '{OPTIONAL_PACKAGES[metric]}' package: pip install 'rvqkit[eval]'"


def _speech_pair(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, rate: int):
    ref, est = _channels(reference), _channels(estimate)
    _check_pair(ref, est)
    if np.abs(ref).max() <= SILENCE:
        raise MetricSkipped("silent original")
    r, e = _mono(ref).astype(np.float32), _mono(est).astype(np.float32)
    if rate != sample_rate:
        r = _of_reference(f"mono{rate}", ref, sample_rate, lambda: resample(r[None], sample_rate, rate)[0])
        e = resample(e[None], sample_rate, rate)[0]
    return r, e


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (MOS-LQO) of the channel averages, resampled to 16 kHz."""
    from pesq import pesq

    seconds = _channels(reference).shape[-1] / sample_rate
    if seconds < PESQ_MIN_SECONDS:
        raise MetricSkipped(f"too short for PESQ ({seconds:.2f} s < {PESQ_MIN_SECONDS} s)")
    r, e = _speech_pair(reference, estimate, sample_rate, PESQ_RATE)
    try:
        return float(pesq(PESQ_RATE, r, e, "wb"))
    except Exception as ex:  # pesq's NoUtterancesError, BufferTooShortError ...
        raise MetricSkipped(f"PESQ failed: {type(ex).__name__} {ex}".strip()) from ex


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """STOI (0..1) of the channel averages, resampled to 10 kHz."""
    from pystoi import stoi as _stoi

    r, e = _speech_pair(reference, estimate, sample_rate, STOI_RATE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(r, e, STOI_RATE, extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricSkipped("too short for STOI (fewer than 30 frames of 25.6 ms with sound)")
    return value


_VISQOL = None


def _visqol_api():
    """Google's ViSQOL API in speech mode (16 kHz), per its README; None where the bindings are absent."""
    global _VISQOL
    if _VISQOL is None:
        try:
            import os

            from visqol import visqol_lib_py
            from visqol.pb2 import visqol_config_pb2
        except Exception:
            return None
        config = visqol_config_pb2.VisqolConfig()
        config.audio.sample_rate = PESQ_RATE
        config.options.use_speech_scoring = True
        config.options.svr_model_path = os.path.join(
            os.path.dirname(visqol_lib_py.__file__),
            "model",
            "lattice_tcditugenmeetpackhref_ls2_nl60_lr12_bs2048_learn.005_ep2400_train1_7_raw.tflite",
        )
        api = visqol_lib_py.VisqolApi()
        api.Create(config)
        _VISQOL = api
    return _VISQOL


def visqol(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """ViSQOL speech-mode MOS-LQO of the channel averages at 16 kHz (Google's bindings)."""
    api = _visqol_api()
    if api is None:
        raise MetricSkipped(why_unavailable("visqol"))
    r, e = _speech_pair(reference, estimate, sample_rate, PESQ_RATE)
    return float(api.Measure(r.astype(np.float64), e.astype(np.float64)).moslqo)


FUNCTIONS: dict[str, Callable[..., float]] = {
    "si_sdr": lambda r, e, sr: si_sdr(r, e),
    "mel_distance": mel_distance,
    "stft_distance": stft_distance,
    "pesq": pesq_wb,
    "stoi": stoi,
    "visqol": visqol,
}


# -- delay -----------------------------------------------------------------------------------------------
def estimate_delay(reference: np.ndarray, estimate: np.ndarray, max_lag: int) -> int:
    """Lag in samples (positive: ``estimate`` comes later) in ``[-max_lag, max_lag]`` that maximises
    the cross-correlation of the channel averages (FFT-based); 0 for silent signals."""
    r, e = _mono(_channels(reference)), _mono(_channels(estimate))
    n = r.shape[-1]
    max_lag = max(0, min(max_lag, n - 1))
    if not np.any(r) or not np.any(e) or max_lag == 0:
        return 0
    size = 1 << (2 * n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(e, size) * np.conj(np.fft.rfft(r, size)), size)
    lags = np.concatenate([corr[: max_lag + 1], corr[size - max_lag :]])  # lags 0..max, -max..-1
    best = int(np.argmax(lags))
    return best if best <= max_lag else best - len(lags)


def align(reference: np.ndarray, estimate: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """The overlapping parts of ``reference`` and ``estimate`` shifted back by ``lag`` samples."""
    ref, est = _channels(reference), _channels(estimate)
    if lag > 0:
        return ref[:, :-lag], est[:, lag:]
    if lag < 0:
        return ref[:, -lag:], est[:, :lag]
    return ref, est


# -- all at once -----------------------------------------------------------------------------------------
def score(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    metrics: tuple[str, ...] = METRICS,
    max_lag: int = 0,
) -> dict[str, object]:
    """Every metric in ``metrics`` of ``estimate`` against ``reference``: ``{metric: value}`` (NaN where
    skipped) and ``skipped``: ``"metric: reason; ..."``. With ``max_lag`` > 0, also ``delay_samples``
    (:func:`estimate_delay`) and ``<metric>_aligned`` for the metrics that do not align by themselves
    (all but PESQ and ViSQOL), computed after :func:`align` (equal to the plain ones at zero delay)."""
    out: dict[str, object] = {}
    reasons: list[str] = []

    def run(name: str, ref: np.ndarray, est: np.ndarray, key: str) -> None:
        if not available(name):
            out[key] = math.nan
            return
        try:
            out[key] = FUNCTIONS[name](ref, est, sample_rate)
        except MetricSkipped as e:
            out[key] = math.nan
            if not key.endswith("_aligned"):
                reasons.append(f"{name}: {e}")

    ref, est = _channels(reference), _channels(estimate)
    for name in metrics:
        run(name, ref, est, name)
    if max_lag > 0:
        lag = estimate_delay(ref, est, max_lag) if np.isfinite(ref).all() and np.isfinite(est).all() else 0
        out["delay_samples"] = lag
        a_ref, a_est = align(ref, est, lag)
        for name in metrics:
            if name in ("pesq", "visqol"):
                continue
            if lag == 0:
                out[f"{name}_aligned"] = out[name]
            else:
                run(name, a_ref, a_est, f"{name}_aligned")
    out["skipped"] = "; ".join(reasons)
    return out
