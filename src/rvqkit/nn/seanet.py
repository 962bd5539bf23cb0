"""SEANet encoder and decoder as used by EnCodec (layer order and indices as in the references)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..config import CodecConfig
from .conv import SConv1d, SConvTranspose1d
from .lstm import SLSTM
from .streaming import StreamingModule, init_layer_state, step_layer


def _conv(cfg: CodecConfig, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1) -> SConv1d:
    return SConv1d(
        cin,
        cout,
        kernel,
        stride,
        dilation,
        causal=cfg.use_causal_conv,
        norm=cfg.norm_type,
        pad_mode=cfg.pad_mode,
    )


def _elu_(layer: nn.ELU, x: torch.Tensor) -> torch.Tensor:
    """ELU in place: for intermediate results that nothing else reads (saves a pass over memory)."""
    return F.elu(x, layer.alpha, inplace=True)


def _apply(layer: nn.Module, x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``layer(x)``, with an ELU done in place when ``inplace`` (``x`` is an intermediate result)."""
    return _elu_(layer, x) if inplace and isinstance(layer, nn.ELU) else layer(x)


@dataclass
class ResnetState:
    """Streaming state of :class:`ResnetBlock`: its layers' states and shortcut outputs awaiting the block's."""

    block: list[Any]
    shortcut: Any
    pending: torch.Tensor | None = None


@dataclass
class SequentialState:
    layers: list[Any] = field(default_factory=list)


class ResnetBlock(StreamingModule):
    """``shortcut(x) + conv1x1(elu(conv_k(elu(x))))``, the hidden width reduced by ``compress``.

    Streaming: the block path starts later than the 1x1 shortcut (its first convolution waits for the
    samples its left reflect padding reads), so shortcut outputs wait in the state until matched.
    """

    def __init__(
        self, cfg: CodecConfig, dim: int, dilations: tuple[int, int], scratch_input: bool = False
    ) -> None:
        super().__init__()
        hidden = dim // cfg.compress
        kernels = (cfg.residual_kernel_size, 1)
        layers: list[nn.Module] = []
        for i, (k, d) in enumerate(zip(kernels, dilations, strict=True)):
            cin = dim if i == 0 else hidden
            cout = dim if i == len(kernels) - 1 else hidden
            layers += [nn.ELU(), _conv(cfg, cin, cout, k, dilation=d)]
        self.block = nn.ModuleList(layers)
        self.shortcut = _conv(cfg, dim, dim, 1) if cfg.use_conv_shortcut else nn.Identity()
        #: The caller never reads the block's input again (true inside SEANet, where a block is never
        #: the first layer). With a convolutional shortcut, run first, the first ELU may then overwrite
        #: the input in place; otherwise only the second ELU works in place.
        self.scratch_input = scratch_input and cfg.use_conv_shortcut

    def _inplace(self, i: int) -> bool:
        return i > 0 or self.scratch_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = self.shortcut(x)
        y = x
        for i, layer in enumerate(self.block):
            y = _apply(layer, y, inplace=self._inplace(i))
        return y.add_(short)  # == shortcut(x) + y, bit for bit

    def init_state(self, batch_size: int) -> ResnetState:
        return ResnetState(
            [init_layer_state(layer, batch_size) for layer in self.block],
            init_layer_state(self.shortcut, batch_size),
        )

    def step(self, x: torch.Tensor, state: ResnetState, final: bool = False) -> torch.Tensor:
        short = step_layer(self.shortcut, x, state.shortcut, final)
        y = x
        for i, (layer, st) in enumerate(zip(self.block, state.block, strict=True)):
            if self._inplace(i) and isinstance(layer, nn.ELU):
                y = _elu_(layer, y)
            else:
                y = step_layer(layer, y, st, final)
        pending = short if state.pending is None else torch.cat([state.pending, short], dim=-1)
        n = y.shape[-1]
        state.pending = pending[..., n:]
        return y.add_(pending[..., :n])  # == shortcut + y, bit for bit; y is this step's own output


class _Sequential(StreamingModule):
    """A list of layers run in order; the LSTM is the one layer that returns a state beside its output."""

    layers: nn.ModuleList

    def __init__(self, layers: list[nn.Module] | None = None) -> None:
        super().__init__()
        if layers is not None:
            self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)[0] if isinstance(layer, SLSTM) else _apply(layer, x, inplace=i > 0)
        return x

    def init_state(self, batch_size: int) -> SequentialState:
        return SequentialState([init_layer_state(layer, batch_size) for layer in self.layers])

    def step(self, x: torch.Tensor, state: SequentialState, final: bool = False) -> torch.Tensor:
        for i, (layer, st) in enumerate(zip(self.layers, state.layers, strict=True)):
            x = _elu_(layer, x) if i > 0 and isinstance(layer, nn.ELU) else step_layer(layer, x, st, final)
        return x


class SEANetEncoder(_Sequential):
    """Audio ``[B, channels, samples]`` to embeddings ``[B, hidden_size, frames]`` (hop 320 samples)."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(cfg, cfg.audio_channels, cfg.num_filters, cfg.kernel_size)]
        mult = 1
        for ratio in reversed(cfg.upsampling_ratios):
            dim = mult * cfg.num_filters
            for j in range(cfg.num_residual_layers):
                layers.append(ResnetBlock(cfg, dim, (cfg.dilation_growth_rate**j, 1), scratch_input=True))
            layers += [nn.ELU(), _conv(cfg, dim, dim * 2, ratio * 2, stride=ratio)]
            mult *= 2
        dim = mult * cfg.num_filters
        layers += [
            SLSTM(dim, cfg.num_lstm_layers),
            nn.ELU(),
            _conv(cfg, dim, cfg.hidden_size, cfg.last_kernel_size),
        ]
        self.layers = nn.ModuleList(layers)

    def split_at_lstm(self) -> tuple[_Sequential, SLSTM, _Sequential]:
        """The layers before the LSTM, the LSTM, and the layers after it: views that share this encoder's
        modules (not registered in it, so its state dict is unchanged). ``tail(lstm(head(x))[0])`` is
        ``self(x)``; the head and tail stream like the whole encoder."""
        k = next(i for i, layer in enumerate(self.layers) if isinstance(layer, SLSTM))
        lstm = self.layers[k]
        assert isinstance(lstm, SLSTM)
        return _Sequential(list(self.layers[:k])), lstm, _Sequential(list(self.layers[k + 1 :]))


class SEANetDecoder(_Sequential):
    """Embeddings ``[B, hidden_size, frames]`` to audio ``[B, channels, frames * 320]``."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        mult = 2 ** len(cfg.upsampling_ratios)
        dim = mult * cfg.num_filters
        layers: list[nn.Module] = [
            _conv(cfg, cfg.hidden_size, dim, cfg.kernel_size),
            SLSTM(dim, cfg.num_lstm_layers),
        ]
        for ratio in cfg.upsampling_ratios:
            dim = mult * cfg.num_filters
            layers += [
                nn.ELU(),
                SConvTranspose1d(
                    dim,
                    dim // 2,
                    ratio * 2,
                    stride=ratio,
                    causal=cfg.use_causal_conv,
                    norm=cfg.norm_type,
                    trim_right_ratio=cfg.trim_right_ratio,
                ),
            ]
            for j in range(cfg.num_residual_layers):
                layers.append(
                    ResnetBlock(cfg, dim // 2, (cfg.dilation_growth_rate**j, 1), scratch_input=True)
                )
            mult //= 2
        layers += [nn.ELU(), _conv(cfg, cfg.num_filters, cfg.audio_channels, cfg.last_kernel_size)]
        self.layers = nn.ModuleList(layers)
