"""PNG figures of an :class:`~rvqkit.inspector.Inspection`: waveforms and log-mel spectrograms of the input
against its reconstructions from the first k codebooks, residual norm and codebook use per layer, and a
heat map of the codes.

Matplotlib is optional (``pip install 'rvqkit[plot]'``) and imported only when a figure is drawn. The
figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas: no pyplot, no
display, no change to the caller's matplotlib backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import RvqkitError
from .inspector import Inspection, log_mel, mel_filterbank, stft_size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOTS = ("waveforms.png", "spectrograms.png", "residual_norm.png", "codes.png")
DPI = 110


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise RvqkitError("plots need matplotlib: pip install 'rvqkit[plot]'") from e
    return Figure(figsize=(width, height), layout="constrained")


def _rows(insp: Inspection) -> list[tuple[str, np.ndarray]]:
    """(title, channel-0 signal) for the input and each reconstruction."""
    ch = " (channel 0)" if insp.audio.shape[0] > 1 else ""
    out = [(f"input{ch}", insp.audio[0].numpy())]
    for row in insp.report["reconstructions"]:
        k = row["n_q"]
        out.append(
            (
                f"first {k} codebook{'s' if k > 1 else ''}: {row['bandwidth_kbps']:g} kbps, "
                f"SNR {round(row['snr_db'], 1) + 0.0:.1f} dB{ch}",  # + 0.0: no "-0.0"
                insp.reconstructions[k][0].numpy(),
            )
        )
    return out


def waveforms(insp: Inspection) -> Figure:
    rows = _rows(insp)
    fig = _figure(10, 1.5 * len(rows) + 0.6)
    axes = np.atleast_1d(fig.subplots(len(rows), 1, sharex=True, sharey=True))
    t = np.arange(len(rows[0][1])) / insp.sample_rate
    for ax, (title, y) in zip(axes, rows, strict=True):
        ax.plot(t, y, linewidth=0.5, color="tab:blue" if ax is axes[0] else "tab:orange")
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("amplitude", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, t[-1] if len(t) else 1)
    return fig


def spectrograms(insp: Inspection) -> Figure:
    rows = _rows(insp)
    sr = insp.sample_rate
    mels = [log_mel(y, sr).numpy() for _, y in rows]
    top = float(mels[0].max())
    fig = _figure(10, 1.9 * len(rows) + 0.6)
    axes = np.atleast_1d(fig.subplots(len(rows), 1, sharex=True))
    duration = len(rows[0][1]) / sr
    n_mels = mels[0].shape[0]
    # label the mel axis in Hz at each filter's peak frequency
    fb = mel_filterbank(sr, stft_size(sr), n_mels)
    peaks_hz = fb.argmax(axis=1) * sr / stft_size(sr)
    ticks = np.linspace(0, n_mels - 1, 6).round().astype(int)
    image = None
    for ax, (title, _), mel in zip(axes, rows, mels, strict=True):
        image = ax.imshow(
            mel,
            origin="lower",
            aspect="auto",
            extent=(0, duration, -0.5, n_mels - 0.5),
            vmin=top - 80,
            vmax=top,
            cmap="magma",
            interpolation="nearest",
        )
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_yticks(ticks, [f"{peaks_hz[i]:.0f}" for i in ticks], fontsize=7)
        ax.set_ylabel("Hz (mel)", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    assert image is not None  # rows is not empty (mels[0] above)
    fig.colorbar(image, ax=list(axes), label="power (dB)", shrink=0.8)
    return fig


def residual_norms(insp: Inspection) -> Figure:
    r = insp.report
    layers = r["layers"]
    fig = _figure(10, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(layers) + 1)
    norms = [r["embedding"]["frame_norm"]] + [row["residual_norm"] for row in layers]
    ax1.plot(x, norms, marker="o")
    ax1.set_yscale("log")
    ax1.set_xticks(x, ["emb"] + [str(i) for i in range(len(layers))], fontsize=7)
    ax1.set_xlabel("after quantizer layer")
    ax1.set_ylabel("mean per-frame L2 norm of the residual")
    ax1.set_title("Residual left after each layer", fontsize=10)
    ax1.grid(alpha=0.3, which="both")
    k = np.arange(len(layers))
    ax2.bar(k, [row["perplexity"] for row in layers], color="tab:green", label="perplexity")
    ax2.plot(k, [row["distinct_codes"] for row in layers], "o", color="tab:red", label="distinct codes")
    ax2.set_xticks(k, [str(i) for i in k], fontsize=7)
    ax2.set_xlabel("quantizer layer")
    ax2.set_ylabel(f"codes (of {r['codebook_size']})")
    ax2.set_title(f"Codebook use over {r['frames']} frames", fontsize=10)
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3, axis="y")
    return fig


def codes_heatmap(insp: Inspection) -> Figure:
    codes = insp.codes.numpy()
    r = insp.report
    fig = _figure(10, 0.25 * codes.shape[0] + 2)
    ax = fig.subplots()
    frames = codes.shape[1]
    image = ax.imshow(
        codes,
        aspect="auto",
        origin="upper",
        cmap="viridis",
        interpolation="nearest",
        vmin=0,
        vmax=r["codebook_size"] - 1,
        extent=(0, frames / r["frame_rate"], codes.shape[0] - 0.5, -0.5),
    )
    ax.set_yticks(range(codes.shape[0]))
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("codebook")
    ax.set_title(f"Codes: {codes.shape[0]} codebooks x {frames} frames", fontsize=10)
    fig.colorbar(image, ax=ax, label="code index")
    return fig


FIGURES: dict[str, Any] = {
    "waveforms.png": waveforms,
    "spectrograms.png": spectrograms,
    "residual_norm.png": residual_norms,
    "codes.png": codes_heatmap,
}


def save_plots(insp: Inspection, folder: str | os.PathLike[str]) -> list[str]:
    """Write every figure as PNG into ``folder`` (the caller checks overwriting); returns the file names."""
    out = []
    for name, draw in FIGURES.items():
        fig = draw(insp)
        fig.savefig(Path(folder) / name, dpi=DPI, format="png")
        out.append(name)
    return out
