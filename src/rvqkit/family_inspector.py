"""``rvqkit inspect`` for Mimi and DAC: the same walk and report as EnCodec's
(:func:`rvqkit.inspector.inspect_audio`), through a :class:`~rvqkit.family_codec.FamilyCodec`.

The codes are the family's exact codes (:meth:`FamilyCodec.encode`). The residual after layer k is the
quantizer's input latent minus what the first k + 1 codebooks stand for (:meth:`FamilyCodec.latent`,
:meth:`FamilyCodec.dequantize`), computed from the whole-signal latent. SNAC is not walked: its levels run
at several frame rates, so "the first k codebooks" of one frame grid does not exist (``rvqkit eval`` scores
its first k levels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import __version__
from .codec import AudioInput
from .errors import AudioError, BandwidthError, CodesError
from .family_codec import FamilyCodec
from .inspector import (
    REPORT_FORMAT,
    REPORT_VERSION,
    Inspection,
    checked_ks,
    codebook_usage,
    frame_norm,
    latent_stats,
    log_mel,
    snr_db,
)


def family_kbps(fc: FamilyCodec, k: int) -> float:
    """Bitrate in kbps of the first ``k`` codebooks: k x log2(codebook size) bits per frame."""
    return k * float(np.log2(fc.config.codebook_size)) * fc.frame_rate / 1000


@torch.inference_mode()
def inspect_family(
    fc: FamilyCodec,
    audio: AudioInput,
    sample_rate: int,
    n_q: int | None = None,
    ks: list[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Inspection:
    """Walk one signal through a Mimi or DAC model step by step and measure each step.

    Args:
        fc: the model (:func:`rvqkit.load_family_model`).
        audio: one item, ``[samples]`` or ``[channels, samples]`` (any rate; resampled as ``encode`` does).
        sample_rate: of ``audio``, in Hz.
        n_q: codebooks walked (default: all of the model's).
        ks: codebook counts to reconstruct from (default: 1, 2, 4, ... below n_q, and n_q).
        progress: called with (model passes done, passes in all).

    The report has the fields of :func:`rvqkit.inspector.inspect_audio`'s; ``embedding`` is the
    quantizer's input latent, and ``bandwidth_kbps`` is the nominal rate of ``n_q`` codebooks.
    """
    if fc.family == "snac":
        raise CodesError(
            "inspect walks one frame grid of codebooks (EnCodec, Mimi, DAC); SNAC's levels run at several "
            "frame rates (rvqkit eval scores its first k levels)"
        )
    shape = list(audio.shape) if isinstance(audio, (np.ndarray, torch.Tensor)) else None
    if shape is None or len(shape) not in (1, 2):
        raise AudioError("inspect takes one signal: [samples] or [channels, samples]")
    n_q = fc.num_codebooks if n_q is None else n_q
    if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= fc.num_codebooks:
        raise BandwidthError(f"n_q must be an integer from 1 to {fc.num_codebooks}, got {n_q!r}")
    ks = checked_ks(ks, n_q, f"with n_q={n_q}")

    x = fc.prepare(audio, sample_rate)[0]  # [C, N] at the model's rate
    codes = fc.encode(x, fc.sample_rate, n_q=n_q)  # [n_q, frames], the family's exact codes
    latent = fc.latent(x)
    if progress:
        progress(1, 1 + len(ks))
    emb_norm = frame_norm(latent)
    layers = []
    for k in range(n_q):
        r = frame_norm(latent - fc.dequantize(codes[: k + 1]))
        layers.append(
            {
                "layer": k,
                "indices_shape": [1, *codes[k].shape],
                "residual_norm": r,
                "relative_residual": r / emb_norm if emb_norm > 0 else 0.0,
                **codebook_usage(codes[k], fc.config.codebook_size),
            }
        )

    mel_in = log_mel(x, fc.sample_rate)
    recon, rows = {}, []
    for k in ks:
        y = fc.decode(codes[:k], length=x.shape[-1])
        recon[k] = y
        rows.append(
            {
                "n_q": k,
                "bandwidth_kbps": family_kbps(fc, k),
                "snr_db": snr_db(x, y),
                "log_mel_l1_db": float((log_mel(y, fc.sample_rate) - mel_in).abs().mean()),
            }
        )
        if progress:
            progress(1 + len(rows), 1 + len(ks))
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "rvqkit_version": __version__,
        "model": f"{fc.family} ({fc.source})",
        "weights_sha256": None,
        "input": {
            "shape": shape,
            "sample_rate": int(sample_rate),
            "samples": int(shape[-1]),
            "duration_s": shape[-1] / sample_rate,
        },
        "model_input": {
            "shape": [1, *x.shape],
            "sample_rate": fc.sample_rate,
            "channels": fc.channels,
            "samples": x.shape[-1],
        },
        "bandwidth_kbps": family_kbps(fc, n_q),
        "n_q": n_q,
        "frames": int(codes.shape[-1]),
        "frame_rate": fc.frame_rate,
        "codebook_size": int(fc.config.codebook_size),
        "embedding": latent_stats(latent),
        "layers": layers,
        "reconstructions": rows,
    }
    return Inspection(report, x, recon, None, fc.sample_rate, code_matrix=codes)
