"""DAC's encoder and decoder: Snake activations, dilated residual units, strided (transposed) convolutions.

Module and parameter names follow ``transformers``' ``DacModel`` (``encoder.block.0.res_unit1.conv1``),
so that a ``transformers`` state dict loads as it is; :mod:`rvqkit.dac.loading` renames descript's
``.pth`` keys onto them. Weight norm is folded into plain weights at load time, so every convolution is
an ordinary ``nn.Conv1d`` / ``nn.ConvTranspose1d`` with DAC's symmetric zero padding (``padding=``):
the network is not causal. (rvqkit.nn.conv's convolutions implement EnCodec's reflect and causal
padding, which DAC does not use.)

Every operation is the references' own, in the same order, so that the floats are theirs: only
allocations differ (Snake and the residual sums work in place where the input is not needed again).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import DacConfig


def snake(x: torch.Tensor, alpha: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """DAC's Snake activation ``x + 1/(alpha + 1e-9) * sin(alpha * x)**2`` for ``x`` ``[B, C, T]``.

    The references' expression, operation for operation (``alpha * x``, ``sin``, ``pow(2)``, times the
    reciprocal, plus ``x``: IEEE products and sums are commutative, so ``t * alpha`` and ``t + x`` are the
    same floats), computed in one buffer instead of five. ``inplace`` writes the result into ``x``.
    """
    t = x * alpha
    t.sin_().pow_(2).mul_((alpha + 1e-9).reciprocal())
    if inplace:
        return x.add_(t)
    return t.add_(x)


class Snake1d(nn.Module):
    """Snake with one learned ``alpha`` per channel (parameter shape ``[1, C, 1]``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        return snake(x, self.alpha, inplace)


class ResidualUnit(nn.Module):
    """``x + conv2(snake2(conv1(snake1(x))))``: a k=7 dilated convolution then a 1x1, same length."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.snake1 = Snake1d(dim)
        self.conv1 = nn.Conv1d(dim, dim, kernel_size=7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake1d(dim)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.snake2(self.conv1(self.snake1(x)), inplace=True))
        crop = (x.shape[-1] - y.shape[-1]) // 2  # only without padding (descript's chunked compress)
        if crop > 0:
            x = x[..., crop:-crop]
        return y.add_(x)


class EncoderBlock(nn.Module):
    """Three residual units (dilations 1, 3, 9) at ``dim // 2`` channels, Snake, then a strided
    convolution (kernel ``2 * stride``, padding ``ceil(stride / 2)``) to ``dim`` channels."""

    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.res_unit1 = ResidualUnit(dim // 2, 1)
        self.res_unit2 = ResidualUnit(dim // 2, 3)
        self.res_unit3 = ResidualUnit(dim // 2, 9)
        self.snake1 = Snake1d(dim // 2)
        self.conv1 = nn.Conv1d(dim // 2, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_unit3(self.res_unit2(self.res_unit1(x)))
        return self.conv1(self.snake1(x, inplace=True))


class DecoderBlock(nn.Module):
    """Snake, a transposed convolution (kernel ``2 * stride``, padding ``ceil(stride / 2)``, no output
    padding: ``stride * T - 1`` samples for odd strides), then three residual units."""

    def __init__(self, in_dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.snake1 = Snake1d(in_dim)
        self.conv_t1 = nn.ConvTranspose1d(
            in_dim, out_dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)
        )
        self.res_unit1 = ResidualUnit(out_dim, 1)
        self.res_unit2 = ResidualUnit(out_dim, 3)
        self.res_unit3 = ResidualUnit(out_dim, 9)

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        x = self.conv_t1(self.snake1(x, inplace=inplace))
        return self.res_unit3(self.res_unit2(self.res_unit1(x)))


class DacEncoder(nn.Module):
    """Audio ``[B, 1, T]`` → latents ``[B, latent_dim, T / hop_length]`` (T a multiple of the hop)."""

    def __init__(self, cfg: DacConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, cfg.encoder_dim, kernel_size=7, padding=3)
        self.block = nn.ModuleList(
            EncoderBlock(cfg.encoder_dim * 2 ** (i + 1), s) for i, s in enumerate(cfg.encoder_rates)
        )
        self.snake1 = Snake1d(cfg.encoder_out_dim)
        self.conv2 = nn.Conv1d(cfg.encoder_out_dim, cfg.latent_dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x, inplace=True))


class DacDecoder(nn.Module):
    """Latents ``[B, latent_dim, F]`` → audio ``[B, 1, n]`` in [-1, 1] (tanh); ``n`` is
    ``F * hop_length`` for even strides, 8 samples fewer for the 16 and 24 kHz models (stride 5)."""

    def __init__(self, cfg: DacConfig) -> None:
        super().__init__()
        dim = cfg.decoder_dim
        self.conv1 = nn.Conv1d(cfg.latent_dim, dim, kernel_size=7, padding=3)
        self.block = nn.ModuleList(
            DecoderBlock(dim // 2**i, dim // 2 ** (i + 1), s) for i, s in enumerate(cfg.decoder_rates)
        )
        out_dim = dim // 2 ** len(cfg.decoder_rates)
        self.snake1 = Snake1d(out_dim)
        self.conv2 = nn.Conv1d(out_dim, 1, kernel_size=7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.block:
            x = block(x, inplace=True)
        return self.conv2(self.snake1(x, inplace=True)).tanh_()
