"""Framing facts of a :class:`~rvqkit.config.CodecConfig`: how a signal is cut into segments, how many
code frames it has, and the overlap-add weight of the 48 kHz model's segments.

They depend on the configuration alone, so the bitstream, chunked file I/O, the corpus and the server
take them from here without importing the network. Lengths are in samples at the model rate.
"""

from __future__ import annotations

import math

import torch

from .config import CodecConfig


def segment_count(cfg: CodecConfig, length: int) -> int:
    """Number of segments a ``length``-sample signal is cut into (1 for unsegmented models), in O(1)."""
    if cfg.segment_length is None:
        return 1
    assert cfg.segment_stride is not None
    return max(0, -(-length // cfg.segment_stride))


def segment_bounds(cfg: CodecConfig, length: int) -> list[tuple[int, int]]:
    """(start, end) sample offsets of the segments a ``length``-sample signal is cut into.

    The list has :func:`segment_count` entries: check that against a limit before calling this on a
    length read from a file."""
    if cfg.segment_length is None:
        return [(0, length)]
    stride = cfg.segment_stride
    assert stride is not None
    return [(o, min(o + cfg.segment_length, length)) for o in range(0, length, stride)]


def segment_frames(cfg: CodecConfig, length: int) -> list[int]:
    """Code frames of each segment of a ``length``-sample signal (``ceil(segment / hop)``), in order."""
    return [-(-(end - start) // cfg.hop_length) for start, end in segment_bounds(cfg, length)]


def frames_for_length(cfg: CodecConfig, length: int) -> int:
    """Code frames for a signal of ``length`` samples (summed over its segments).

    Computed in O(1) whatever the length (it equals summing ``ceil(segment / hop)`` over
    :func:`segment_bounds`), so a length declared in a file can be checked before anything is
    allocated for it."""
    hop = cfg.hop_length
    if cfg.segment_length is None:
        return math.ceil(length / hop)
    seg, stride = cfg.segment_length, cfg.segment_stride
    assert stride is not None
    if length <= 0:
        return 0
    # segments start at k * stride for k < count; those with k * stride + seg <= length are whole
    count = segment_count(cfg, length)
    whole = min(count, (length - seg) // stride + 1) if length >= seg else 0
    frames = whole * math.ceil(seg / hop)
    for k in range(whole, count):  # at most ceil(seg / stride) partial segments at the end
        frames += math.ceil((length - k * stride) / hop)
    return frames


def overlap_weight(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The references' triangular overlap-add weight for an ``n``-sample segment."""
    t = torch.linspace(0, 1, n + 2, device=device, dtype=dtype)[1:-1]
    return 0.5 - (t - 0.5).abs()
