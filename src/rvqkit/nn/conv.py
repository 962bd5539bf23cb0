"""EnCodec's padded 1-D convolution and transposed convolution.

Weight norm is folded into plain weights at load time (see :mod:`rvqkit.weights`), so these modules
hold an ordinary ``nn.Conv1d`` / ``nn.ConvTranspose1d`` and, for the 48 kHz model, a ``GroupNorm(1, C)``
("time group norm"). Padding follows the reference exactly: reflect padding on the left (causal) or
split left/right (non-causal), plus the extra right padding that makes the last window complete.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .streaming import StreamingModule, empty_like_time


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding (samples) so that the last stride window of a ``length``-sample input is complete."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


def pad1d(x: torch.Tensor, left: int, right: int, mode: str = "reflect") -> torch.Tensor:
    """``F.pad`` that also reflects inputs shorter than the padding (zero-extended first, as the reference).

    Reflect padding is built with ``torch.cat`` of the flipped edges: the same values as
    ``F.pad(mode="reflect")``, several times faster on CPU for long signals (PyTorch's reflect kernel
    indexes sample by sample). No padding returns ``x`` itself, without a copy.
    """
    if left == 0 and right == 0:
        return x
    if mode != "reflect":
        return F.pad(x, (left, right), mode="constant" if mode == "zero" else mode)
    length = x.shape[-1]
    max_pad = max(left, right)
    if length <= max_pad:
        extra = max_pad - length + 1
        padded = F.pad(F.pad(x, (0, extra)), (left, right), mode="reflect")
        return padded[..., : padded.shape[-1] - extra]
    parts = [x[..., 1 : left + 1].flip(-1)] if left else []
    parts.append(x)
    if right:
        parts.append(x[..., length - right - 1 : length - 1].flip(-1))
    return torch.cat(parts, dim=-1)


@dataclass
class ConvState:
    """Streaming state of :class:`SConv1d`, relative to the buffer so that streams in the same phase can be
    stacked into one batch.

    Attributes:
        buffer: raw input not yet consumed ``[B, C, n]``. Once ``at_start`` is False, ``buffer[..., 0]`` is
            the first sample the next output's window reads.
        at_start: the buffer still begins at the signal's first sample (the left padding is still due).
        emitted: outputs returned while ``at_start``.
    """

    buffer: torch.Tensor | None = None
    at_start: bool = True
    emitted: int = 0


@dataclass
class ConvTransposeState:
    """Streaming state of :class:`SConvTranspose1d`: the overlapping tail of partial sums (no bias)."""

    tail: torch.Tensor | None = None


class SConv1d(StreamingModule):
    """Conv1d with EnCodec's causal or centred reflect padding and optional time group norm.

    Streaming (causal only): output ``j`` reads the padded input window starting at ``j * stride``; the
    left reflect padding needs input samples ``1..padding_total``, so outputs start once
    ``padding_total + 1`` samples have arrived and then follow the input with no lag. Raw input is kept
    until no later window needs it; the end's extra padding is applied on the final call.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        causal: bool = False,
        norm: str = "weight_norm",
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation)
        self.norm = nn.GroupNorm(1, out_channels) if norm == "time_group_norm" else None
        self.causal = causal
        self.pad_mode = pad_mode
        self.stride = stride
        self.kernel_size = (kernel_size - 1) * dilation + 1  # effective, with dilation
        self.padding_total = self.kernel_size - stride

    def padding(self, length: int) -> tuple[int, int]:
        """(left, right) padding in samples for an input of ``length`` samples."""
        extra = extra_padding_for_conv1d(length, self.kernel_size, self.stride, self.padding_total)
        if self.causal:
            return self.padding_total, extra
        right = self.padding_total // 2
        return self.padding_total - right, right + extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = self.padding(x.shape[-1])
        y: torch.Tensor = self.conv(pad1d(x, left, right, self.pad_mode))
        return y if self.norm is None else self.norm(y)

    def init_state(self, batch_size: int) -> ConvState:
        if not self.causal or self.norm is not None:
            raise ValueError("sample-level streaming needs causal convolutions without time group norm")
        return ConvState()

    def step(self, x: torch.Tensor, state: ConvState, final: bool = False) -> torch.Tensor:
        buf = x if state.buffer is None else torch.cat([state.buffer, x], dim=-1)
        state.buffer = buf
        s, k, p = self.stride, self.kernel_size, self.padding_total
        if state.at_start:
            n, done = buf.shape[-1], state.emitted  # n: samples seen; done: outputs returned
            if final and done == 0:
                # Nothing returned yet and the whole signal is here: exactly the offline computation.
                state.buffer = None
                return self.forward(buf) if n > 0 else empty_like_time(x, self.conv.out_channels)
            if not final and n <= p:  # the left reflect padding reads samples 1..p
                return empty_like_time(x, self.conv.out_channels)
            arr = pad1d(buf, p, 0, self.pad_mode)  # output j reads arr[j*s : j*s + k]
        else:
            # buffer[0] is the first sample output `done` reads; count samples from there.
            n, done, arr = buf.shape[-1] - p, 0, buf
        n_end = (
            math.ceil(n / s) if final else n // s
        )  # outputs of the signal so far (offline count at the end)
        if n_end <= done:
            return empty_like_time(x, self.conv.out_channels)
        if final:
            arr = pad1d(arr, 0, extra_padding_for_conv1d(n, k, s, p), self.pad_mode)
        y = self.conv(arr[..., done * s : (n_end - 1) * s + k])
        if state.at_start:
            drop = n_end * s - p  # raw samples no later window reads
            if drop > 0:
                state.buffer, state.at_start, state.emitted = buf[..., drop:], False, 0
            else:
                state.emitted = n_end
        else:
            state.buffer = buf[..., n_end * s :]
        out: torch.Tensor = y
        return out


class SConvTranspose1d(StreamingModule):
    """ConvTranspose1d that trims EnCodec's fixed padding (all on the right when causal).

    Streaming (causal, all trimming on the right): ``k`` input frames give ``k * stride`` final output
    samples; the overlap of the last frame with the next is kept as state and the trimmed tail is
    dropped at the end, as offline.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        causal: bool = False,
        norm: str = "weight_norm",
        trim_right_ratio: float = 1.0,
    ) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride)
        self.norm = nn.GroupNorm(1, out_channels) if norm == "time_group_norm" else None
        self.causal = causal
        self.stride = stride
        self.kernel_size = kernel_size
        padding_total = kernel_size - stride
        right = math.ceil(padding_total * trim_right_ratio) if causal else padding_total // 2
        self.trim = (padding_total - right, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.conv(x)
        if self.norm is not None:
            y = self.norm(y)
        left, right = self.trim
        return y[..., left : y.shape[-1] - right]

    def init_state(self, batch_size: int) -> ConvTransposeState:
        if not self.causal or self.trim[0] != 0 or self.norm is not None:
            raise ValueError("streaming needs a causal transposed convolution trimmed on the right")
        return ConvTransposeState()

    def step(self, x: torch.Tensor, state: ConvTransposeState, final: bool = False) -> torch.Tensor:
        n = x.shape[-1]
        if n == 0:
            return empty_like_time(x, self.conv.out_channels)
        if x.shape[0] > 1 and x.device.type == "cpu":
            # Row by row on CPU: oneDNN's transposed convolution gives a row other floats in a batch of 3
            # than in one of 2 for some shapes (measured: [B, 128, 480] input, stride 5; about 1e-7), so
            # a batched step would make an item's audio depend on its batch-mates. Rows alone are
            # batch-invariant by construction; the cost is a few more calls per step.
            y = torch.cat(
                [F.conv_transpose1d(r, self.conv.weight, None, self.stride) for r in torch.split(x, 1)]
            )
        else:
            y = F.conv_transpose1d(x, self.conv.weight, None, self.stride)
        overlap = self.kernel_size - self.stride
        if state.tail is not None:
            y[..., :overlap] += state.tail
        state.tail = y[..., n * self.stride :]
        out = y[..., : n * self.stride]
        return out if self.conv.bias is None else out + self.conv.bias[:, None]
