"""A step-by-step look inside the codec for one signal: input → encoder embeddings → each quantizer layer
(its indices, the residual left after it, how much of its codebook it uses) → reconstructions from the
first k codebooks (coarse decoding), with their SNR and log-mel distance to the input.

:func:`inspect_audio` returns an :class:`Inspection`: a JSON-ready :class:`report <Inspection.report>`
plus the arrays the plots need (:mod:`rvqkit.plots`). Everything goes through the public
:class:`~rvqkit.Codec` API (``embed``, ``quantize``, ``encode``, ``decode(n_q=k)``), so the numbers are the
ones a user gets from it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .codec import DEFAULT_BANDWIDTH, AudioInput, Codec
from .encoded import Encoded
from .errors import AudioError, BandwidthError, RvqkitError

REPORT_FORMAT = "rvqkit-inspect"
REPORT_VERSION = 1


# -- spectra ---------------------------------------------------------------------------------------------
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 80) -> np.ndarray:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]`` on the HTK mel scale, 0 Hz to Nyquist, peak 1.

    Built here (a few lines of numpy) so that the core needs neither torchaudio nor librosa.
    """

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(np.array(sample_rate / 2)), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (center - lower)
    falling = (upper - freqs[None]) / (upper - center)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def stft_size(sample_rate: int) -> int:
    """FFT size of about 43 ms (1024 at 24 kHz, 2048 at 48 kHz); the hop is a quarter of it."""
    return 2 ** round(math.log2(sample_rate * 1024 / 24000))


def log_mel(audio: torch.Tensor | np.ndarray, sample_rate: int, n_mels: int = 80) -> torch.Tensor:
    """Log-mel power spectrogram in dB, ``[..., n_mels, stft frames]``, of audio ``[..., samples]``
    (Hann window of :func:`stft_size` samples, hop a quarter of it, floor -100 dB)."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    n_fft = stft_size(sample_rate)
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    if x.shape[-1] < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.shape[-1]))
    spec = torch.stft(
        x, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), center=True, return_complex=True
    )
    mel = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels)) @ spec.abs().pow(2)
    return (10 * torch.log10(mel.clamp_min(1e-10))).reshape(*lead, n_mels, -1)


def snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Signal-to-noise ratio in dB of ``estimate`` against ``reference`` (inf when identical)."""
    noise = (reference - estimate).double().pow(2).sum()
    signal = reference.double().pow(2).sum()
    if noise == 0:
        return math.inf
    return float(10 * torch.log10(signal.clamp_min(1e-20) / noise))


# -- statistics ------------------------------------------------------------------------------------------
def codebook_usage(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Distinct codes, fraction of the codebook used, entropy (bits) and perplexity (2**entropy: the
    number of equally likely codes with the same entropy) of a layer's indices."""
    counts = torch.bincount(indices.reshape(-1).cpu(), minlength=codebook_size).double()
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * torch.log2(p)).sum()) if len(p) else 0.0
    return {
        "distinct_codes": int((counts > 0).sum()),
        "usage": float((counts > 0).sum()) / codebook_size,
        "entropy_bits": entropy,
        "perplexity": 2.0**entropy,
    }


def frame_norm(x: torch.Tensor) -> float:
    """Mean over frames of the L2 norm of each frame's vector, for ``[batch, dim, frames]``."""
    return float(x.double().norm(dim=1).mean())


def default_ks(n_q: int) -> list[int]:
    """Codebook counts to reconstruct from: the powers of two below ``n_q``, and ``n_q``."""
    return sorted({2**i for i in range(int(math.log2(n_q)) + 1) if 2**i < n_q} | {n_q})


@dataclass
class Inspection:
    """The walk's report (JSON-ready) and the arrays behind the plots.

    Attributes:
        report: nested dict, see :func:`inspect_audio`.
        audio: float32 ``[channels, samples]`` input at the model's rate and channels.
        reconstructions: codebook count k → float32 ``[channels, samples]`` decoded from the first k.
        encoded: the codes (``[1, n_q, frames]``) and what decoding them needs (EnCodec).
        sample_rate: model sample rate in Hz.
    """

    report: dict[str, Any]
    audio: torch.Tensor
    reconstructions: dict[int, torch.Tensor]
    encoded: Encoded | None  # None for a Mimi or DAC walk (rvqkit.family_inspector)
    sample_rate: int
    plots: list[str] = field(default_factory=list)
    code_matrix: torch.Tensor | None = None  # [n_q, frames] of a Mimi or DAC walk

    @property
    def codes(self) -> torch.Tensor:
        """int64 ``[n_q, frames]``."""
        if self.code_matrix is not None:
            return self.code_matrix
        assert self.encoded is not None
        return self.encoded.codes[0]


def latent_stats(x: torch.Tensor) -> dict[str, Any]:
    """Shape, mean, std, min, max and ``frame_norm`` of a latent ``[1, dim, frames]``."""
    d = x.double()
    return {
        "shape": list(x.shape),
        "mean": float(d.mean()),
        "std": float(d.std()) if d.numel() > 1 else 0.0,
        "min": float(d.min()),
        "max": float(d.max()),
        "frame_norm": frame_norm(x),
    }


@torch.inference_mode()
def inspect_audio(
    codec: Codec,
    audio: AudioInput,
    sample_rate: int,
    bandwidth: float = DEFAULT_BANDWIDTH,
    ks: list[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Inspection:
    """Walk one signal through the codec step by step and measure each step.

    Args:
        codec: the model.
        audio: one item, ``[samples]`` or ``[channels, samples]`` (any rate; converted as ``encode`` does).
        sample_rate: of ``audio``, in Hz.
        bandwidth: kbps; fixes the number of quantizer layers walked (n_q).
        ks: codebook counts to reconstruct from (default: 1, 2, 4, … below n_q, and n_q).
        progress: called with (model passes done, passes in all): the encoder, then one decode per k.

    The report holds: ``input`` (shape, rate, samples, seconds), ``model_input`` (shape at the model's rate),
    ``embedding`` (shape ``[1, 128, frames]``, mean, std, min, max, ``frame_norm``: mean per-frame L2 norm),
    ``layers`` (per quantizer layer: ``indices_shape``, ``residual_norm`` (``frame_norm`` of the residual
    after it), ``relative_residual`` (that / the embedding's), ``distinct_codes``, ``usage``,
    ``entropy_bits``, ``perplexity``) and ``reconstructions`` (per k: kbps, ``snr_db``, ``log_mel_l1_db``:
    mean absolute difference of the log-mel spectrograms in dB).
    """
    shape = list(audio.shape) if isinstance(audio, (np.ndarray, torch.Tensor)) else None
    if shape is None or len(shape) not in (1, 2):
        raise AudioError("inspect takes one signal: [samples] or [channels, samples]")
    n_q = codec.n_q_for(bandwidth)
    ks = checked_ks(ks, n_q, f"at {bandwidth:g} kbps")

    x = codec.prepare(audio, sample_rate)[0]  # [C, N] at the model's rate
    emb, scales = codec.embed(x, codec.sample_rate)
    steps = codec.quantize(emb, n_q)
    if progress:
        progress(1, 1 + len(ks))
    # the walk's codes are encode()'s codes (the tests check it); build the Encoded from them rather
    # than running the encoder a second time
    encoded = codec.wrap_codes(
        torch.stack([s.indices for s in steps], dim=1).cpu(),
        None if scales is None else scales.cpu(),
        [x.shape[-1]],
        [emb.shape[-1]],
    )
    recon, rows = _reconstructions(codec, encoded, x, ks, progress)
    report = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "rvqkit_version": __version__,
        "model": codec.name,
        "weights_sha256": codec.weights_sha256,
        "input": {
            "shape": shape,
            "sample_rate": int(sample_rate),
            "samples": int(shape[-1]),
            "duration_s": shape[-1] / sample_rate,
        },
        "model_input": {
            "shape": [1, *x.shape],
            "sample_rate": codec.sample_rate,
            "channels": codec.channels,
            "samples": x.shape[-1],
        },
        "bandwidth_kbps": codec.config.bandwidth_for_n_q(n_q),
        "n_q": n_q,
        "frames": int(encoded.frame_lengths[0]),
        "frame_rate": codec.frame_rate,
        "codebook_size": codec.codebook_size,
        "embedding": latent_stats(emb),
        "layers": _layer_rows(emb, steps, codec.codebook_size),
        "reconstructions": rows,
    }
    return Inspection(report, x, recon, encoded, codec.sample_rate)


def checked_ks(ks: list[int] | None, n_q: int, where: str) -> list[int]:
    """The codebook counts to reconstruct from: ``ks`` sorted and checked against ``n_q`` (``where`` says
    why that is the top, e.g. "at 6 kbps"), or the default."""
    if ks is None:
        return default_ks(n_q)
    bad = [k for k in ks if not 1 <= k <= n_q]
    if bad:
        raise BandwidthError(f"reconstruction codebook counts must be in [1, {n_q}] {where}, got {bad}")
    return sorted(set(ks))


def _layer_rows(emb: torch.Tensor, steps: list, codebook_size: int) -> list[dict]:
    """One row per quantizer layer: its residual's norm (absolute and relative to the embedding's) and its
    codebook usage."""
    emb_norm = frame_norm(emb)
    rows = []
    for k, step in enumerate(steps):
        r = frame_norm(step.residual)
        rows.append(
            {
                "layer": k,
                "indices_shape": list(step.indices.shape),
                "residual_norm": r,
                "relative_residual": r / emb_norm if emb_norm > 0 else 0.0,
                **codebook_usage(step.indices, codebook_size),
            }
        )
    return rows


def _reconstructions(
    codec: Codec,
    encoded: Encoded,
    x: torch.Tensor,
    ks: list[int],
    progress: Callable[[int, int], None] | None,
) -> tuple[dict[int, torch.Tensor], list[dict]]:
    """Decode from the first k codebooks for each k: the audio per k, and a row per k (kbps, SNR and
    log-mel distance in dB against ``x``, the model-rate input)."""
    mel_in = log_mel(x, codec.sample_rate)
    recon, rows = {}, []
    for k in ks:
        y = codec.decode(encoded, n_q=k)[0].cpu()
        recon[k] = y
        rows.append(
            {
                "n_q": k,
                "bandwidth_kbps": codec.config.bandwidth_for_n_q(k),
                "snr_db": snr_db(x, y),
                "log_mel_l1_db": float((log_mel(y, codec.sample_rate) - mel_in).abs().mean()),
            }
        )
        if progress:
            progress(1 + len(rows), 1 + len(ks))
    return recon, rows


# -- rendering -------------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.4g}"


def overview_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines of the walk before the per-layer table."""
    inp, mi, emb = report["input"], report["model_input"], report["embedding"]
    return [
        ("model", report["model"]),
        (
            "input",
            f"shape {inp['shape']}, {inp['sample_rate']} Hz, {inp['samples']} samples, {inp['duration_s']:.3f} s",
        ),
        ("model input", f"shape {mi['shape']} at {mi['sample_rate']} Hz"),
        (
            "embedding",
            f"shape {emb['shape']}, mean {_fmt(emb['mean'])}, std {_fmt(emb['std'])}, "
            f"min {_fmt(emb['min'])}, max {_fmt(emb['max'])}, frame norm {_fmt(emb['frame_norm'])}",
        ),
        (
            "codes",
            f"{report['n_q']} codebooks x {report['frames']} frames ({report['bandwidth_kbps']:g} kbps, "
            f"{report['frame_rate']} frames/s)",
        ),
    ]


LAYER_COLUMNS = [
    ("layer", "layer", str),
    ("indices", "indices_shape", lambda v: "x".join(map(str, v))),
    ("residual norm", "residual_norm", _fmt),
    ("relative", "relative_residual", _fmt),
    ("distinct codes", "distinct_codes", str),
    ("perplexity", "perplexity", _fmt),
]
RECON_COLUMNS = [
    ("codebooks", "n_q", str),
    ("kbps", "bandwidth_kbps", lambda v: f"{v:g}"),
    ("SNR dB", "snr_db", _fmt),
    ("log-mel L1 dB", "log_mel_l1_db", _fmt),
]


def table(rows: list[dict[str, Any]], columns: list) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of a report table."""
    return [c[0] for c in columns], [[fmt(r[key]) for _, key, fmt in columns] for r in rows]


def to_markdown(report: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """The report as Markdown: the overview, the per-layer table, the reconstructions, the plots."""
    out = ["# rvqkit inspect", ""]
    out += [f"- **{k}**: {v}" for k, v in overview_rows(report)]
    for title, rows, cols in (
        ("Quantizer layers", report["layers"], LAYER_COLUMNS),
        ("Reconstructions from the first k codebooks", report["reconstructions"], RECON_COLUMNS),
    ):
        head, cells = table(rows, cols)
        out += ["", f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in cells]
    if plots:
        out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(out) + "\n"


# -- files -----------------------------------------------------------------------------------------------
REPORT_FILES = ("report.json", "report.md")


def json_ready(v: Any) -> Any:
    """Infinite floats (SNR of an exact reconstruction) become null: strict JSON has no Infinity."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_ready(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_ready(x) for x in v]
    return v


def check_report_folder(folder: str | os.PathLike[str], overwrite: bool = False, plots: bool = True) -> None:
    """Raise :class:`RvqkitError` if ``folder`` is a file or already holds report files (unless ``overwrite``)."""
    from .plots import PLOTS

    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise RvqkitError(f"{out} is a file, not a folder")
    existing = [n for n in (*REPORT_FILES, *(PLOTS if plots else ())) if (out / n).exists()]
    if existing and not overwrite:
        raise RvqkitError(f"{out} already holds {', '.join(existing)}; pass overwrite=True to replace them")


def write_report(
    insp: Inspection, folder: str | os.PathLike[str], overwrite: bool = False, plots: bool = True
) -> list[Path]:
    """Write ``report.json``, ``report.md`` and (with ``plots``) the PNG figures into ``folder`` (created if
    missing). Refuses, before writing anything, if one of them exists and ``overwrite`` is False."""
    check_report_folder(folder, overwrite, plots)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        from .plots import save_plots

        insp.plots = save_plots(insp, out)
    report = json_ready({**insp.report, "plots": list(insp.plots)})
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(to_markdown(insp.report, insp.plots))
    return [out / n for n in (*REPORT_FILES, *insp.plots)]
