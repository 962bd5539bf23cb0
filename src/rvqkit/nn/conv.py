"""EnCodec's padded 1-D convolution and transposed convolution.

Weight norm is folded into plain weights at load time (see :mod:`rvqkit.weights`), so these modules
hold an ordinary ``nn.Conv1d`` / ``nn.ConvTranspose1d`` and, for the 48 kHz model, a ``GroupNorm(1, C)``
("time group norm"). Padding follows the reference exactly: reflect padding on the left (causal) or
split left/right (non-causal), plus the extra right padding that makes the last window complete.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding (samples) so that the last stride window of a ``length``-sample input is complete."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


def pad1d(x: torch.Tensor, left: int, right: int, mode: str = "reflect") -> torch.Tensor:
    """``F.pad`` that also reflects inputs shorter than the padding (zero-extended first, as the reference)."""
    if mode != "reflect":
        return F.pad(x, (left, right), mode="constant" if mode == "zero" else mode)
    length = x.shape[-1]
    max_pad = max(left, right)
    extra = 0
    if length <= max_pad:
        extra = max_pad - length + 1
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - extra]


class SConv1d(nn.Module):
    """Conv1d with EnCodec's causal or centred reflect padding and optional time group norm."""

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
        y = self.conv(pad1d(x, left, right, self.pad_mode))
        return y if self.norm is None else self.norm(y)


class SConvTranspose1d(nn.Module):
    """ConvTranspose1d that trims EnCodec's fixed padding (all on the right when causal)."""

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
        y = self.conv(x)
        if self.norm is not None:
            y = self.norm(y)
        left, right = self.trim
        return y[..., left : y.shape[-1] - right]
