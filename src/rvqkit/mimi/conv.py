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
        first = state.buffer is None
        if state.buffer is None:  # first (spelled out so that mypy narrows state.buffer)
            if x.shape[-1] == 0:
                return empty_like_time(x, self.conv.out_channels)
            state.buffer = _pad(x, self.padding_total, 0, self.pad_mode)  # the left padding, as offline
        elif x.shape[-1]:
            state.buffer = torch.cat([state.buffer, x], dim=-1)
        assert state.buffer is not None  # set just above, or by an earlier call
        buf, p, s = state.buffer, self.padding_total, self.stride
        if final:
            buf = _pad(buf, 0, -(buf.shape[-1] - p) % s, self.pad_mode)
        n_out = (buf.shape[-1] - p) // s
        if n_out == 0:
            return empty_like_time(x, self.conv.out_channels)
        window = buf[..., : (n_out - 1) * s + self.kernel_size]
        # A stream's first call is forward's computation (same call, same shape: a whole signal given
        # as one final chunk gives forward's floats); later calls, a few outputs each, go through a
        # matrix product when that reads the weights once (see _few_outputs).
        y = self._few_outputs(window) if not first and self._use_gemm(n_out) else self.conv(window)
        state.buffer = buf[..., n_out * s :]
        return y

    def _use_gemm(self, n_out: int) -> bool:
        c = self.conv
        big = c.weight.numel() >= GEMM_MIN_WEIGHTS
        return big and n_out <= GEMM_MAX_OUTPUTS and c.groups == 1 and c.dilation[0] == 1

    def _few_outputs(self, window: torch.Tensor) -> torch.Tensor:
        """The convolution of ``window`` (no padding) as one matrix product of its unfolded windows
        ``[B * n, C_in * k]`` with the weights ``[C_out, C_in * k]``.

        Why not ``nn.Conv1d``: for a few outputs, PyTorch's CPU convolution (oneDNN) re-lays out the
        whole weight tensor on every call, which for the deep layers costs several times the product
        itself. Measured (1 thread, best of 30, the shapes of an 80 ms step): encoder 512->1024 k16
        (3 outputs) 5.1 ms -> 1.5 ms, decoder 512->1024 k7 1.5 -> 0.6 ms, encoder 1024->512 k3 0.63 ->
        0.33 ms; for layers under 1M weights the convolution was as fast or faster (512->256 k3: 0.19
        vs 0.26 ms). Same sums, other rounding (streaming is exact to float rounding, docs/mimi.md)."""
        w = self.conv.weight
        b, cin, _ = window.shape
        cols = window.unfold(-1, self.kernel_size, self.stride)  # [B, C_in, n, k]
        n = cols.shape[2]
        cols = cols.permute(0, 2, 1, 3).reshape(b * n, cin * self.kernel_size)
        flat = w.reshape(w.shape[0], -1).t()
        y = torch.mm(cols, flat) if self.conv.bias is None else torch.addmm(self.conv.bias, cols, flat)
        return y.view(b, n, -1).transpose(1, 2)


#: Streaming steps compute a convolution of at least ``GEMM_MIN_WEIGHTS`` weights as a matrix product
#: (see ``MimiConv1d._few_outputs``) when it produces at most ``GEMM_MAX_OUTPUTS`` outputs; other layers,
#: and wider steps (a stream's first call, big chunks), use ``nn.Conv1d`` as offline.
GEMM_MAX_OUTPUTS = 128
GEMM_MIN_WEIGHTS = 1 << 20


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
        w = self.conv.weight
        fast = x.shape[-1] <= GEMM_MAX_OUTPUTS and (
            w.numel() >= GEMM_MIN_WEIGHTS or self.conv.groups == x.shape[1]
        )
        if state.tail is None or not fast or 2 * self.stride != self.conv.kernel_size[0]:
            y = F.conv_transpose1d(x, self.conv.weight, None, self.stride, groups=self.conv.groups)
        else:
            y = self._overlap_add(x)
        if state.tail is not None:
            y[..., : self.trim] += state.tail
        state.tail = y[..., n:]
        out = y[..., :n]
        return out if self.conv.bias is None else out + self.conv.bias[:, None]

    def _overlap_add(self, x: torch.Tensor) -> torch.Tensor:
        """``conv_transpose1d(x, weight)`` (no bias) for kernel = 2 x stride, as products and one
        overlap-add: input frame t adds ``w[..., :s] x_t`` at ``t*s`` and ``w[..., s:] x_t`` at ``(t+1)*s``.
        For the few frames of a streaming step this is faster on CPU than the transposed convolution,
        which re-lays out its weights on every call (measured, 1 thread, 2 frames: decoder 1024->512 k16
        11.0 -> 2.7 ms; depthwise upsampling 0.07 -> 0.03 ms; a 128->64 layer over 480 frames was
        slower, 0.74 vs 0.96 ms, so layers under 1M weights keep the transposed convolution)."""
        w, s = self.conv.weight, self.stride  # [C_in, C_out / groups, 2s]
        b, cin, t = x.shape
        if self.conv.groups == 1:
            parts = torch.mm(x.transpose(1, 2).reshape(b * t, cin), w.reshape(cin, -1)).view(b, t, -1, 2, s)
            parts = parts.permute(0, 2, 3, 1, 4)  # [B, C_out, 2, T, s]
        elif self.conv.groups == cin == self.conv.out_channels:  # depthwise
            parts = (x[:, :, None, :, None] * w.view(cin, 2, 1, s)).contiguous()  # [B, C, 2, T, s]
        else:
            return F.conv_transpose1d(x, w, None, s, groups=self.conv.groups)
        head = parts[:, :, 0].reshape(b, -1, t * s)
        tail = parts[:, :, 1].reshape(b, -1, t * s)
        return F.pad(head, (0, s)) + F.pad(tail, (s, 0))
