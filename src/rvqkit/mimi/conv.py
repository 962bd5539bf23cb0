"""Mimi's causal convolution and transposed convolution, offline and streaming.

Offline, padding follows transformers' ``MimiConv1d`` exactly: ``kernel - stride`` samples on the left
(zeros, or the first frame repeated for the downsampling convolution) and, at the end of each layer's own
input, the extra right padding that completes the last stride window (same mode). moshi instead pads the
*waveform* to a multiple of the frame (1920 samples) and never pads inside a layer; the two agree except
for a last, partial frame (see docs/mimi.md).

rvqkit's EnCodec convolutions (:mod:`rvqkit.nn.conv`) reflect-pad and have no groups; Mimi's pad with
zeros or by replication and its upsampling is depthwise, and with zero padding a layer's streaming state
is simply its last ``kernel - stride`` inputs (moshi's ``StreamingConv1d.previous``), so these are their
own small modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..nn.streaming import StreamingModule, empty_like_time


@dataclass
class MimiConvState:
    """Streaming state of :class:`MimiConv1d`.

    Attributes:
        buffer: inputs not yet consumed ``[B, C_in, n]``, the left context included: the next output reads
            ``buffer[..., :kernel]``. None before the first input.
    """

    buffer: torch.Tensor | None = None


@dataclass
class MimiConvTransposeState:
    """Streaming state of :class:`MimiConvTranspose1d`: the overlap tail ``[B, C_out, kernel - stride]`` of
    partial sums the next frames add to (without the bias), None before the first frame."""

    tail: torch.Tensor | None = None


def _pad(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """transformers' ``MimiConv1d._pad1d`` for the zero ("constant") and "replicate" modes."""
    return F.pad(x, (left, right), mode, 0.0) if mode == "constant" else F.pad(x, (left, right), mode)


class MimiConv1d(StreamingModule):
    """Causal ``Conv1d``: ``kernel - stride`` samples of left padding and the extra right padding that
    completes the last stride window, so ``n`` inputs give ``ceil(n / stride)`` outputs.

    Streaming: output ``j`` reads inputs ``j*stride - p .. j*stride + stride - 1`` (``p`` = kernel - stride),
    so it is final as soon as its last input arrives; the state keeps the inputs later outputs read. The
    final call pads the end exactly as :meth:`forward` does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        pad_mode: str = "constant",
    ) -> None:
        super().__init__()
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"pad_mode must be 'constant' or 'replicate', got {pad_mode!r}")
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups, bias=bias
        )
        self.pad_mode = pad_mode
        self.stride = stride
        self.kernel_size = (kernel_size - 1) * dilation + 1  # effective, with dilation
        self.padding_total = self.kernel_size - stride

    def extra_padding(self, length: int) -> int:
        """Right padding (samples) that completes the last stride window of a ``length``-sample input."""
        return -length % self.stride

    def output_length(self, length: int) -> int:
        return math.ceil(length / self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_pad(x, self.padding_total, self.extra_padding(x.shape[-1]), self.pad_mode))

    def init_state(self, batch_size: int) -> MimiConvState:
        return MimiConvState()

    def step(self, x: torch.Tensor, state: MimiConvState, final: bool = False) -> torch.Tensor:
        if state.buffer is None:
            if x.shape[-1] == 0:
                return empty_like_time(x, self.conv.out_channels)
            state.buffer = _pad(x, self.padding_total, 0, self.pad_mode)  # the left padding, as offline
        elif x.shape[-1]:
            state.buffer = torch.cat([state.buffer, x], dim=-1)
        buf, p, s = state.buffer, self.padding_total, self.stride
        if final:
            buf = _pad(buf, 0, -(buf.shape[-1] - p) % s, self.pad_mode)
        n_out = (buf.shape[-1] - p) // s
        if n_out == 0:
            return empty_like_time(x, self.conv.out_channels)
        y = self.conv(buf[..., : (n_out - 1) * s + self.kernel_size])
        state.buffer = buf[..., n_out * s :]
        return y


class MimiConvTranspose1d(StreamingModule):
    """Causal ``ConvTranspose1d``: the ``kernel - stride`` last samples are trimmed, so ``n`` inputs give
    ``n * stride`` outputs.

    Streaming: output ``m`` sums the contributions of inputs ``t <= m / stride`` only, so a chunk of ``n``
    inputs completes ``n * stride`` outputs; the overlap with the next inputs is kept as state and dropped
    at the end (the trimmed samples), as offline.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(
            in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias
        )
        self.stride = stride
        self.trim = kernel_size - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y[..., : y.shape[-1] - self.trim]

    def init_state(self, batch_size: int) -> MimiConvTransposeState:
        return MimiConvTransposeState()

    def step(self, x: torch.Tensor, state: MimiConvTransposeState, final: bool = False) -> torch.Tensor:
        n = x.shape[-1] * self.stride
        if n == 0:
            return empty_like_time(x, self.conv.out_channels)
        y = F.conv_transpose1d(x, self.conv.weight, None, self.stride, groups=self.conv.groups)
        if state.tail is not None:
            y[..., : self.trim] += state.tail
        state.tail = y[..., n:]
        out = y[..., :n]
        return out if self.conv.bias is None else out + self.conv.bias[:, None]
