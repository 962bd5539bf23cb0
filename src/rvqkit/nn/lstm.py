"""EnCodec's LSTM with a skip connection, in convolutional layout ``[batch, channels, time]``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .streaming import StreamingModule


@dataclass
class LSTMState:
    """Hidden and cell states ``[B, num_layers, C]`` (batch first, so that states stack) or None at the start."""

    h: torch.Tensor | None = None
    c: torch.Tensor | None = None


class SLSTM(StreamingModule):
    """Multi-layer LSTM over time plus the input (skip connection); streaming carries (h, c)."""

    def __init__(self, dimension: int, num_layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run over ``x`` ``[B, C, T]`` from ``state`` (h, c), or from zeros; return output and new state."""
        seq = x.permute(2, 0, 1)
        y, new_state = self.lstm(seq, state)
        return y.add_(seq).permute(1, 2, 0), new_state  # == y + seq, bit for bit

    def init_state(self, batch_size: int) -> LSTMState:
        return LSTMState()

    def step(self, x: torch.Tensor, state: LSTMState, final: bool = False) -> torch.Tensor:
        if x.shape[-1] == 0:
            return x
        hc = (
            None if state.h is None or state.c is None else (state.h.transpose(0, 1), state.c.transpose(0, 1))
        )
        y, (h, c) = self.forward(x, hc)
        state.h, state.c = h.transpose(0, 1), c.transpose(0, 1)
        return y
