"""Shared pieces of the SNAC tests: small configs, test signals, and random-weight checkpoints built with
the snac package's own model and saved in its published format (config.json + pytorch_model.bin)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rvqkit.snac import SnacConfig, save_snac
from rvqkit.snac.loading import build_snac, chirp_signal, fold_weight_norm, seed_codebooks

SNAC_SKIP = "snac is a test-only reference: pip install -c constraints.txt snac==1.2.1"

#: 4 levels with local attention (window 4), an odd stride (3: output_padding in the decoder), noise
SMALL_ATTN = SnacConfig(
    sampling_rate=16000,
    encoder_dim=8,
    encoder_rates=(2, 3, 2),
    decoder_dim=128,
    decoder_rates=(2, 3, 2),
    attn_window_size=4,
    codebook_size=256,
    codebook_dim=8,
    vq_strides=(4, 2, 2, 1),
    noise=True,
    depthwise=True,
    name="small-attn",
)
#: 2 levels, no attention, full (not depthwise) convolutions, no noise blocks
SMALL_PLAIN = SnacConfig(
    sampling_rate=16000,
    encoder_dim=8,
    encoder_rates=(2, 4),
    decoder_dim=32,
    decoder_rates=(4, 2),
    attn_window_size=None,
    codebook_size=128,
    codebook_dim=4,
    vq_strides=(2, 1),
    noise=False,
    depthwise=False,
    name="small-plain",
)


def signals(sr: int, seconds: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Noise, a sine and a speech-like chirp, ``[1, 1, n]``, n not a multiple of any hop (n odd)."""
    n = int(seconds * sr) | 1
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / sr
    return {
        "noise": (0.3 * torch.randn(n, generator=g)).view(1, 1, n),
        "sine": (0.5 * torch.sin(2 * math.pi * 440.0 * t)).float().view(1, 1, n),
        "chirp": chirp_signal(sr, n / sr, seed)[..., :n],
    }


@torch.no_grad()
def reference_model(config: SnacConfig, seed: int):
    """A ``snac.SNAC`` with random weights: torch's init from ``seed``, then Snake's alpha, weight norm's
    magnitudes and the attention norms drawn around 1 (so that no tensor keeps a default that would hide
    a mapping mistake), and codebooks seeded from a test signal (many distinct codes)."""
    snac = pytest.importorskip("snac", reason=SNAC_SKIP)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = snac.SNAC(**config.to_snac_config()).eval()
        for name, p in ref.named_parameters():
            if name.endswith(("alpha", "original0", "norm.weight")):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
            elif name.endswith("norm.bias"):
                p.uniform_(-0.1, 0.1)
    ours = build_snac(config, fold_weight_norm(ref.state_dict()))
    seed_codebooks(ours, chirp_signal(config.sampling_rate, 2.0, seed), seed)
    for q_ref, q in zip(ref.quantizer.quantizers, ours.quantizer.quantizers, strict=True):
        q_ref.codebook.weight.copy_(q.codebook.weight)
    return ref


def weight_g_style(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A parametrizations-style state dict renamed to the older ``weight_g`` / ``weight_v`` keys."""
    return {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in state.items()
    }


def save_reference(ref, config: SnacConfig, folder: Path, key_style: str = "parametrizations") -> Path:
    """Save a snac model as the hub holds it: its ``state_dict()`` and the config.json."""
    state = ref.state_dict()
    if key_style == "weight_g":
        state = weight_g_style(state)
    return save_snac(folder, state, config)


def stub_reference_noise(monkeypatch) -> None:
    """Make snac's NoiseBlocks return their input (the reference with the noise off)."""
    import snac.layers

    monkeypatch.setattr(snac.layers.NoiseBlock, "forward", lambda self, x: x)
