"""Seeded random-weight Mimi models, for tests and benchmarks (no download; the audio is noise).

Random weights alone would make a poor test model: a zero-initialised codebook gives every frame code 0,
and a random one leaves most entries unused. So, as k-means initialisation would, codebook k is filled
with latent frames of a test signal (plus a little noise) left over by codebooks 0..k-1, and the
layer scales are raised from 0.01 so that the transformers matter. Codes then vary frame to frame and
code equality is a meaningful check.
"""

from __future__ import annotations

import math

import torch

from .config import MimiConfig
from .model import MimiModel


def _test_signal(n: int, channels: int, sr: int, gen: torch.Generator) -> torch.Tensor:
    """Tones, a chirp and noise growing from faint to loud, ``[1, channels, n]``."""
    t = torch.arange(n, dtype=torch.float64) / sr
    level = torch.linspace(0.02, 0.3, n, dtype=torch.float64)
    rows = []
    for _ in range(channels):
        f0 = 110 * (1 + float(torch.rand((), generator=gen, dtype=torch.float64)))
        chirp = torch.sin(2 * math.pi * (200 + 2000 * t / t[-1]) * t)
        x = 0.25 * torch.sin(2 * math.pi * f0 * t) + 0.1 * chirp
        rows.append(x + level * torch.randn(n, generator=gen, dtype=torch.float64))
    return torch.stack(rows).float()[None]


@torch.no_grad()
def random_mimi(config: MimiConfig, seed: int = 0, fit_seconds: float = 4.0) -> MimiModel:
    """A :class:`MimiModel` for ``config`` with seeded random weights (eval mode).

    Convolution and linear weights are normal with std ``1/sqrt(fan_in)``; biases and LayerNorm
    parameters are perturbed around their usual values; layer scales are uniform in [0.05, 0.3]; the
    decoder's last convolution is scaled so that decoded audio peaks near 0.5.
    Codebook k: half its entries are residual frames (after codebooks 0..k-1) of ``fit_seconds`` of a
    test signal plus noise, half are drawn from a normal law with the residual's per-dimension mean and
    standard deviation, so that the codebooks are used by any input and no codebook's entries shrink
    to rounding size (which would make codes ties).
    """
    gen = torch.Generator().manual_seed(seed)
    model = MimiModel(config).eval()
    for name, p in model.named_parameters():
        if name.endswith("layer_scale.scale"):
            p.copy_(0.05 + 0.25 * torch.rand(p.shape, generator=gen))
        elif "layernorm" in name:
            base = 1.0 if name.endswith("weight") else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
        elif name.endswith("bias"):
            p.copy_(0.01 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
    x = _test_signal(int(fit_seconds * config.sampling_rate), config.channels, config.sampling_rate, gen)
    latent = model.latent(x)
    for rvq in (model.quantizer.semantic, model.quantizer.acoustic):
        residual = rvq.input_proj(latent)[0].t()  # [frames, dim]
        for book in rvq.codebooks:
            mean, std = residual.mean(0), residual.std(0)
            book.copy_(mean + std * torch.randn(book.shape, generator=gen))
            residual = residual - book[torch.cdist(residual, book).argmin(dim=1)]
    last = model.decoder.layers[-1].conv  # scaled so that the decoded audio peaks near 0.5
    assert isinstance(last, torch.nn.Conv1d) and last.bias is not None  # MimiConv1d: a Conv1d with bias
    codes = model.quantizer.encode(latent, config.num_quantizers)
    last.weight.mul_(0.5 / float(model.decode_latent(model.quantizer.decode(codes)).abs().max()))
    last.bias.zero_()
    return model
