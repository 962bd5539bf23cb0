"""EnCodec's LSTM with a skip connection, in convolutional layout ``[batch, channels, time]``."""

from __future__ import annotations

import torch
from torch import nn


class SLSTM(nn.Module):
    """Multi-layer LSTM over time plus the input (skip connection)."""

    def __init__(self, dimension: int, num_layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run over ``x`` ``[B, C, T]`` from ``state`` (h, c), or from zeros; return output and new state."""
        seq = x.permute(2, 0, 1)
        y, new_state = self.lstm(seq, state)
        return (y + seq).permute(1, 2, 0), new_state
