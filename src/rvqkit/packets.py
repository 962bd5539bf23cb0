"""The unit of codes that moves between encoder and decoder steps."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class CodePacket:
    """Codes that became final in one step.

    Attributes:
        codes: int64 ``[batch, n_q, frames]`` (``frames`` may be 0).
        scales: ``[batch, segments]`` scales of the 48 kHz segments completed here, else None.
        segment_frames: frames of each 48 kHz segment completed here (empty for 24 kHz).
    """

    codes: torch.Tensor
    scales: torch.Tensor | None = None
    segment_frames: list[int] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[-1])
