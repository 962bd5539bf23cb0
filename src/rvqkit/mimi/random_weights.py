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
from torch import nn

from .config import MimiConfig
from .model import MimiModel


def _test_signal(n: int, channels: int, sr: int, gen: torch.Generator) -> torch.Tensor:
    """Tones, a chirp and noise ``[1, channels, n]``, peak about 0.5."""
    t = torch.arange(n, dtype=torch.float64) / sr
    rows = []
    for _ in range(channels):
        f0 = 110 * (1 + float(torch.rand((), generator=gen, dtype=torch.float64)))
        x = 0.25 * torch.sin(2 * math.pi * f0 * t) + 0.1 * torch.sin(
            2 * math.pi * (200 + 2000 * t / t[-1]) * t
        )
        rows.append(x + 0.05 * torch.randn(n, generator=gen, dtype=torch.float64))
    return torch.stack(rows).float()[None]


@torch.no_grad()
def random_mimi(config: MimiConfig, seed: int = 0, fit_seconds: float = 8.0) -> MimiModel:
    """A :class:`MimiModel` for ``config`` with seeded random weights (eval mode).

    Convolution and linear weights are normal with std ``1/sqrt(fan_in)``; biases and LayerNorm
    parameters are perturbed around their usual values; layer scales are uniform in [0.05, 0.3]; the
    decoder's last convolution is scaled so the audio stays within about [-1, 1]; codebooks are fitted
    to ``fit_seconds`` of a test signal (see the module docstring).
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
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
    for module in model.modules():
        if isinstance(module, nn.ConvTranspose1d):  # fan-in of a transposed convolution: in / stride
            module.weight.mul_(math.sqrt(module.weight[0].numel() / (module.in_channels / module.groups)))
            module.weight.mul_(math.sqrt(module.stride[0] / module.in_channels * module.groups))
    last = model.decoder.layers[-1].conv
    last.weight.mul_(0.1)
    last.bias.zero_()
    x = _test_signal(int(fit_seconds * config.sampling_rate), config.channels, config.sampling_rate, gen)
    latent = model.latent(x)
    for rvq in (model.quantizer.semantic, model.quantizer.acoustic):
        residual = rvq.input_proj(latent)[0].t()  # [frames, dim]
        for book in rvq.codebooks:
            pick = torch.randint(0, residual.shape[0], (book.shape[0],), generator=gen)
            noise = torch.randn(book.shape, generator=gen) * residual.std() * 0.2
            book.copy_(residual[pick] + noise)
            residual = residual - book[torch.cdist(residual, book).argmin(dim=1)]
    return model
