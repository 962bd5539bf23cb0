"""Mimi's SEANet encoder and decoder (causal, ELU, identity shortcuts), layer indices as transformers'
``MimiEncoder`` / ``MimiDecoder`` so that state dict keys map one to one.

Every convolution here pads with zeros on the left (causal), so streaming needs no lag: a stride-1 layer
returns one output per input, a strided one an output per ``stride`` inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..nn.streaming import StreamingModule, init_layer_state, step_layer
from .config import MimiConfig
from .conv import MimiConv1d, MimiConvTranspose1d


@dataclass
class MimiResnetState:
    block: list[Any]
    shortcut: Any


@dataclass
class MimiSequentialState:
    layers: list[Any]


def _elu(layer: nn.Module, x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``layer(x)``; an ELU overwrites ``x`` when ``inplace`` (an intermediate result nothing else reads).
    In-place or not, ELU gives the same floats."""
    if inplace and isinstance(layer, nn.ELU):
        return F.elu(x, layer.alpha, inplace=True)
    return layer(x)


class MimiResnetBlock(StreamingModule):
    """``shortcut(x) + conv_1(elu(conv_k(elu(x))))``, hidden width ``dim // compress``."""

    def __init__(self, cfg: MimiConfig, dim: int, dilations: tuple[int, int]) -> None:
        super().__init__()
        hidden = dim // cfg.compress
        kernels = (cfg.residual_kernel_size, 1)
        layers: list[nn.Module] = []
        for i, (k, d) in enumerate(zip(kernels, dilations, strict=True)):
            cin = dim if i == 0 else hidden
            cout = dim if i == len(kernels) - 1 else hidden
            layers += [nn.ELU(), MimiConv1d(cin, cout, k, dilation=d)]
        self.block = nn.ModuleList(layers)
        self.shortcut: nn.Module = MimiConv1d(dim, dim, 1) if cfg.use_conv_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, layer in enumerate(self.block):
            y = _elu(layer, y, inplace=i > 0)  # the first ELU's input is x, which the shortcut reads
        return self.shortcut(x) + y  # transformers: residual + hidden_states (the same float either way)

    def init_state(self, batch_size: int) -> MimiResnetState:
        return MimiResnetState(
            [init_layer_state(layer, batch_size) for layer in self.block],
            init_layer_state(self.shortcut, batch_size),
        )

    def step(self, x: torch.Tensor, state: MimiResnetState, final: bool = False) -> torch.Tensor:
        # Stride-1 causal layers return one output per input: the two paths stay aligned.
        y = x
        for i, (layer, st) in enumerate(zip(self.block, state.block, strict=True)):
            y = (
                _elu(layer, y, inplace=True)
                if i > 0 and isinstance(layer, nn.ELU)
                else step_layer(layer, y, st, final)
            )
        return step_layer(self.shortcut, x, state.shortcut, final) + y


class _Sequential(StreamingModule):
    layers: nn.ModuleList

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = _elu(layer, x, inplace=i > 0)
        return x

    def init_state(self, batch_size: int) -> MimiSequentialState:
        return MimiSequentialState([init_layer_state(layer, batch_size) for layer in self.layers])

    def step(self, x: torch.Tensor, state: MimiSequentialState, final: bool = False) -> torch.Tensor:
        for i, (layer, st) in enumerate(zip(self.layers, state.layers, strict=True)):
            x = (
                _elu(layer, x, inplace=True)
                if i > 0 and isinstance(layer, nn.ELU)
                else step_layer(layer, x, st, final)
            )
        return x


class MimiSEANetEncoder(_Sequential):
    """Audio ``[B, channels, samples]`` to ``[B, hidden_size, ceil(samples / 960)]`` (25 Hz)."""

    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [MimiConv1d(cfg.channels, cfg.num_filters, cfg.kernel_size)]
        scale = 1
        for ratio in reversed(cfg.upsampling_ratios):
            dim = scale * cfg.num_filters
            for j in range(cfg.num_residual_layers):
                layers.append(MimiResnetBlock(cfg, dim, (cfg.dilation_growth_rate**j, 1)))
            layers += [nn.ELU(), MimiConv1d(dim, dim * 2, ratio * 2, stride=ratio)]
            scale *= 2
        layers += [nn.ELU(), MimiConv1d(scale * cfg.num_filters, cfg.hidden_size, cfg.last_kernel_size)]
        self.layers = nn.ModuleList(layers)

    def strided(self) -> list[tuple[int, MimiConv1d]]:
        """(index, layer) of the strided convolutions, in order."""
        return [(i, m) for i, m in enumerate(self.layers) if isinstance(m, MimiConv1d) and m.stride > 1]


class MimiSEANetDecoder(_Sequential):
    """``[B, hidden_size, frames]`` (25 Hz) to audio ``[B, channels, frames * 960]``."""

    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        scale = 2 ** len(cfg.upsampling_ratios)
        layers: list[nn.Module] = [MimiConv1d(cfg.hidden_size, scale * cfg.num_filters, cfg.kernel_size)]
        for ratio in cfg.upsampling_ratios:
            dim = scale * cfg.num_filters
            layers += [nn.ELU(), MimiConvTranspose1d(dim, dim // 2, ratio * 2, ratio)]
            for j in range(cfg.num_residual_layers):
                layers.append(MimiResnetBlock(cfg, dim // 2, (cfg.dilation_growth_rate**j, 1)))
            scale //= 2
        layers += [nn.ELU(), MimiConv1d(cfg.num_filters, cfg.channels, cfg.last_kernel_size)]
        self.layers = nn.ModuleList(layers)
