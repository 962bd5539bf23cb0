"""The metrics of :mod:`rvqkit.eval.metrics` computed block by block, in bounded memory, for signals of
any length (``rvqkit roundtrip`` scores whole files; the server scores each codebook count as it
decodes).

Feed equal-shaped ``[channels, n]`` (or ``[n]``) float blocks of the reference and the estimate, in
order, to :meth:`update`; :meth:`value` then gives what the whole-array function gives for the
concatenated signals, up to float rounding (the tests compare them), or raises
:class:`~rvqkit.eval.metrics.MetricSkipped` for the same inputs it does (empty, NaN or Inf samples, a
silent original). Memory is a few FFT frames per channel, whatever the length.

- :class:`SiSdrStream`: per-channel co-moments merged block by block (Chan et al.'s pairwise update,
  which keeps the mean removal exact without a second pass).
- :class:`MelDistanceStream`, :class:`StftDistanceStream`: the frames of the whole signal's centred STFT
  (reflection at both ends, as ``torch.stft(center=True)``), cut from the blocks as they arrive; the
  sums of differences over frames are kept in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..inspector import mel_filterbank, stft_size
from .metrics import SILENCE, STFT_EPS, MetricSkipped, mel_distance, stft_distance, stft_resolutions

#: Metrics that can be computed block by block, in report order.
STREAMING_METRICS = ("si_sdr", "mel_distance", "stft_distance")


def _block(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """``[channels, n]`` floats (float64 kept, anything else as float32)."""
    a = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
    a = a if a.dtype == np.float64 else a.astype(np.float32, copy=False)
    return a[None] if a.ndim == 1 else a


class _Stream:
    """What every streaming metric checks: equal shapes, finite samples, a non-silent original."""

    silent_skips = True

    def __init__(self) -> None:
        self.samples = 0
        self.channels: int | None = None
        self.finite = True
        self.peak = 0.0

    def update(self, reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> None:
        """Add the next ``[channels, n]`` samples of both signals (equal shapes)."""
        ref, est = _block(reference), _block(estimate)
        if ref.shape != est.shape:
            raise ValueError(f"reference {ref.shape} and estimate {est.shape} blocks differ in shape")
        if self.channels is None:
            self.channels = ref.shape[0]
        elif ref.shape[0] != self.channels:
            raise ValueError(f"a block of {ref.shape[0]} channels after blocks of {self.channels}")
        if not ref.shape[-1]:
            return
        self.samples += ref.shape[-1]
        if not self.finite:
            return  # the result is skipped anyway: no more work
        if not (np.isfinite(ref).all() and np.isfinite(est).all()):
            self.finite = False
            return
        self.peak = max(self.peak, float(np.abs(ref).max()))
        self._add(ref, est)

    def _check(self) -> None:
        if self.samples == 0:
            raise MetricSkipped("empty signal")
        if not self.finite:
            raise MetricSkipped("NaN or Inf samples")
        if self.silent_skips and self.peak <= SILENCE:
            raise MetricSkipped("silent original")

    def _add(self, ref: np.ndarray, est: np.ndarray) -> None:
        raise NotImplementedError

    def value(self) -> float:
        raise NotImplementedError


class SiSdrStream(_Stream):
    """Scale-invariant SDR in dB (:func:`~rvqkit.eval.metrics.si_sdr`), block by block."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.mean = np.zeros((2, 1))  # reference, estimate means per channel
        self.m = np.zeros((3, 1))  # co-moments per channel: ref-ref, est-est, ref-est

    def _add(self, ref: np.ndarray, est: np.ndarray) -> None:
        r, e = ref.astype(np.float64), est.astype(np.float64)
        nb = r.shape[-1]
        mean_b = np.stack([r.mean(axis=-1), e.mean(axis=-1)])
        dr, de = r - mean_b[0][:, None], e - mean_b[1][:, None]
        m_b = np.stack([(dr * dr).sum(-1), (de * de).sum(-1), (dr * de).sum(-1)])
        if self.n == 0:
            self.n, self.mean, self.m = nb, mean_b, m_b
            return
        n = self.n + nb
        delta = mean_b - self.mean  # [2, channels]
        w = self.n * nb / n
        self.m = self.m + m_b + w * np.stack([delta[0] ** 2, delta[1] ** 2, delta[0] * delta[1]])
        self.mean = self.mean + delta * (nb / n)
        self.n = n

    def value(self) -> float:
        """SI-SDR in dB, averaged over channels (``inf`` identical, ``-inf`` silent or orthogonal)."""
        self._check()
        out = []
        for rr, ee, re in self.m.T:
            if rr == 0:
                raise MetricSkipped("constant original")
            if ee == 0 or re == 0:
                out.append(-math.inf)
                continue
            rho2 = (re * re) / (rr * ee)  # squared correlation: t / (t + noise)
            out.append(math.inf if rho2 >= 1 else 10 * math.log10(rho2 / (1 - rho2)))
        return float(np.mean(out))


class _Frames:
    """Cuts a signal given block by block into the frames the whole signal's centred STFT has
    (``n_fft`` wide, ``hop`` apart, reflected at both ends by ``n_fft // 2``), as runs of padded samples
    that ``torch.stft(center=False)`` turns into consecutive frames."""

    def __init__(self, n_fft: int, hop: int) -> None:
        self.n_fft, self.hop, self.pad = n_fft, hop, n_fft // 2
        self.buf: np.ndarray | None = None  # [2, channels, n]: reference and estimate together
        self.started = False
        self.total = 0  # samples seen
        self.done = 0  # frames handed out

    def push(self, pair: np.ndarray) -> np.ndarray | None:
        """Add ``[2, channels, n]`` samples; returns the padded run of the frames now complete, if any."""
        self.total += pair.shape[-1]
        self.buf = pair if self.buf is None else np.concatenate([self.buf, pair], axis=-1)
        if not self.started:
            if self.total < self.n_fft:  # a signal shorter than a frame is padded otherwise: wait
                return None
            head = self.buf[..., 1 : self.pad + 1][..., ::-1]
            self.buf = np.concatenate([head, self.buf], axis=-1)
            self.started = True
        count = (self.buf.shape[-1] - self.n_fft) // self.hop + 1
        return self._take(count) if count > 0 else None

    def finish(self) -> np.ndarray | None:
        """The run of the remaining frames (the end reflected); None when no frame is left."""
        if not self.started or self.buf is None:
            return None
        tail = self.buf[..., -self.pad - 1 : -1][..., ::-1]
        self.buf = np.concatenate([self.buf, tail], axis=-1)
        count = self.total // self.hop + 1 - self.done
        return self._take(count) if count > 0 else None

    def _take(self, count: int) -> np.ndarray:
        assert self.buf is not None
        run = self.buf[..., : (count - 1) * self.hop + self.n_fft]
        self.buf = self.buf[..., count * self.hop :]
        self.done += count
        return run


class _FramedStream(_Stream):
    """A metric over STFT frames: keeps the start of a signal shorter than a frame, to score it with
    the whole-array function (which pads such a signal)."""

    def __init__(self, sample_rate: int, resolutions: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.framers = [_Frames(n_fft, hop) for n_fft, hop in resolutions]
        self.short: list[np.ndarray] = []  # the blocks while the signal is shorter than the largest frame
        self.short_limit = max(n for n, _ in resolutions)

    def _add(self, ref: np.ndarray, est: np.ndarray) -> None:
        pair = np.stack([ref, est]).astype(np.float32, copy=False)  # as the whole-array functions
        if self.samples <= self.short_limit:
            self.short.append(pair)
        else:
            self.short = []
        for i, framer in enumerate(self.framers):
            run = framer.push(pair)
            if run is not None:
                self._frames(i, torch.from_numpy(np.ascontiguousarray(run)))

    def _finish(self) -> bool:
        """Score the last frames; False when the signal was too short for the streaming path."""
        if self.samples <= self.short_limit:
            return False
        for i, framer in enumerate(self.framers):
            run = framer.finish()
            framer.buf = None
            if run is not None:
                self._frames(i, torch.from_numpy(np.ascontiguousarray(run)))
        return True

    def _short_pair(self) -> tuple[np.ndarray, np.ndarray]:
        pair = np.concatenate(self.short, axis=-1)
        return pair[0], pair[1]

    def _frames(self, i: int, run: torch.Tensor) -> None:
        raise NotImplementedError


class MelDistanceStream(_FramedStream):
    """Log-mel distance in dB (:func:`~rvqkit.eval.metrics.mel_distance`), block by block."""

    silent_skips = False

    def __init__(self, sample_rate: int, n_mels: int = 80) -> None:
        n_fft = stft_size(sample_rate)
        super().__init__(sample_rate, [(n_fft, n_fft // 4)])
        self.n_fft, self.n_mels = n_fft, n_mels
        self.window = torch.hann_window(n_fft)
        self.filters = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels))
        self.sum, self.count = 0.0, 0
        self.result: float | None = None

    def _frames(self, i: int, run: torch.Tensor) -> None:
        spec = torch.stft(
            run.reshape(-1, run.shape[-1]),
            self.n_fft,
            hop_length=self.n_fft // 4,
            window=self.window,
            center=False,
            return_complex=True,
        )
        mel = 10 * torch.log10((self.filters @ spec.abs().pow(2)).clamp_min(1e-10))
        mel = mel.reshape(2, -1, *mel.shape[-2:])
        self.sum += float((mel[0] - mel[1]).abs().double().sum())
        self.count += mel[0].numel()

    def value(self) -> float:
        """Mean absolute log-mel difference in dB over channels, mel bands and frames."""
        self._check()
        if self.result is None:
            if self._finish():
                self.result = self.sum / self.count
            else:
                ref, est = self._short_pair()
                self.result = mel_distance(ref, est, self.sample_rate)
        return self.result


class StftDistanceStream(_FramedStream):
    """Multi-resolution STFT distance (:func:`~rvqkit.eval.metrics.stft_distance`), block by block."""

    def __init__(self, sample_rate: int) -> None:
        self.resolutions = stft_resolutions(sample_rate)
        super().__init__(sample_rate, [(n_fft, hop) for n_fft, hop, _ in self.resolutions])
        self.windows = [torch.hann_window(win) for _, _, win in self.resolutions]
        # per resolution: sum (Y - X)^2, sum Y^2, sum |log Y - log X|, count
        self.sums = np.zeros((len(self.resolutions), 4))
        self.result: float | None = None

    def _frames(self, i: int, run: torch.Tensor) -> None:
        n_fft, hop, win = self.resolutions[i]
        spec = torch.stft(
            run.reshape(-1, run.shape[-1]),
            n_fft,
            hop,
            win,
            self.windows[i],
            center=False,
            return_complex=True,
        )
        mag = (spec.real.square() + spec.imag.square()).clamp_min(STFT_EPS).sqrt()
        mag = mag.reshape(2, -1, *mag.shape[-2:])
        y, x = mag[0].double(), mag[1].double()
        self.sums[i] += [
            float((y - x).square().sum()),
            float(y.square().sum()),
            float((y.log() - x.log()).abs().sum()),
            y.numel(),
        ]

    def value(self) -> float:
        """Spectral convergence plus mean log-magnitude distance, averaged over the resolutions."""
        self._check()
        if self.result is None:
            if self._finish():
                sc = np.sqrt(self.sums[:, 0] / self.sums[:, 1])
                self.result = float(np.mean(sc + self.sums[:, 2] / self.sums[:, 3]))
            else:
                ref, est = self._short_pair()
                self.result = stft_distance(ref, est, self.sample_rate)
        return self.result


def stream_for(metric: str, sample_rate: int) -> _Stream:
    """A fresh block-by-block accumulator of ``metric`` (one of :data:`STREAMING_METRICS`)."""
    if metric == "si_sdr":
        return SiSdrStream()
    if metric == "mel_distance":
        return MelDistanceStream(sample_rate)
    if metric == "stft_distance":
        return StftDistanceStream(sample_rate)
    raise ValueError(f"unknown streaming metric {metric!r}; choose from {', '.join(STREAMING_METRICS)}")


class BlockScores:
    """Several streaming metrics of one estimate against one reference, fed together.

    Args:
        sample_rate: Hz of both signals.
        metrics: names from :data:`STREAMING_METRICS` (default: all).
    """

    def __init__(self, sample_rate: int, metrics: Sequence[str] = STREAMING_METRICS) -> None:
        self.streams = {m: stream_for(m, sample_rate) for m in metrics}

    def update(self, reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> None:
        """Add the next equal-shaped ``[channels, n]`` blocks of the reference and the estimate."""
        for s in self.streams.values():
            s.update(reference, estimate)

    @property
    def samples(self) -> int:
        """Samples per channel fed so far."""
        return next(iter(self.streams.values())).samples if self.streams else 0

    def results(self) -> dict[str, float | MetricSkipped]:
        """Each metric's value, or the :class:`MetricSkipped` that says why it has none."""
        out: dict[str, float | MetricSkipped] = {}
        for name, s in self.streams.items():
            try:
                out[name] = s.value()
            except MetricSkipped as e:
                out[name] = e
        return out


def score_blocks(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    sample_rate: int,
    metrics: Sequence[str] = STREAMING_METRICS,
) -> dict[str, float | MetricSkipped]:
    """:class:`BlockScores` over ``(reference_block, estimate_block)`` pairs."""
    scores = BlockScores(sample_rate, metrics)
    for ref, est in pairs:
        scores.update(ref, est)
    return scores.results()


__all__ = [
    "STREAMING_METRICS",
    "BlockScores",
    "MelDistanceStream",
    "SiSdrStream",
    "StftDistanceStream",
    "score_blocks",
    "stream_for",
]
