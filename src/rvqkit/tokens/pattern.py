"""Token patterns as data: where each code and each special token of one item goes in its sequence.

A :class:`Pattern` is an index map for one (layout, ``n_q``, frames, begin?, end?), built once and cached
(audiocraft's patterns are the model; here they are tensors, not ``T × n_q`` Python objects). The
sequence of an item is ``streams × length`` cells (1 stream for ``flatten``/``codebook``, ``n_q`` for
``delay``/``parallel``), flattened stream by stream. Each cell holds either a code or a special token:

- encoding is one gather: ``cat(ids of the codes, special ids)[source]``;
- decoding is the inverse map (``code_cells``) plus one vectorised comparison of the special cells
  (``fill_cells``) with the ids they must hold; both lists are ordered so that the first mismatch is the
  one to report.

Special tokens are named by their index in a layout's table of special ids: :data:`BEGIN`, :data:`END`,
and ``DELAY + k`` for codebook ``k``'s delay pad.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

BEGIN, END, DELAY = 0, 1, 2  # indices into a layout's special-id table (DELAY + k: codebook k's delay pad)
CACHED_CELLS = 1 << 20  # patterns up to this many cells are kept (a few MB); longer ones are built each time


@dataclass(frozen=True, eq=False)
class Pattern:
    """Index map of one item's token sequence (read-only tensors, int64).

    Attributes:
        streams: sequences per item (1, or ``n_q`` for multi-stream layouts).
        length: positions (steps) per stream.
        frames: code frames the item holds.
        source: ``[streams * length]``; cell ``i`` takes element ``source[i]`` of the codes' ids
            (``[n_q * frames]``, codebook-major) followed by the special-id table.
        code_cells: ``[n_q * frames]``: the cell of code ``(k, t)`` at index ``k * frames + t``.
        code_order: ``[n_q * frames]``: code indices by position, then stream (the order errors are reported).
        fill_cells: ``[F]``: the cells of special tokens: begin cells, end cells, then delay pads by step
            and stream (the order errors are reported).
        fill_kind: ``[F]``: which special each of them holds (index into the special-id table).
    """

    streams: int
    length: int
    frames: int
    source: torch.Tensor
    code_cells: torch.Tensor
    code_order: torch.Tensor
    fill_cells: torch.Tensor
    fill_kind: torch.Tensor

    def column(self, cell: int) -> int:
        """The position (step) of a cell in its stream."""
        return cell % self.length

    def stream(self, cell: int) -> int:
        return cell // self.length


def pattern(layout: str, n_q: int, frames: int, begin: bool, end: bool) -> Pattern:
    """The pattern of an item of ``frames`` frames (cached when small enough to keep)."""
    if n_q * (frames + n_q + 2) <= CACHED_CELLS:
        return _cached(layout, n_q, frames, begin, end)
    return _build(layout, n_q, frames, begin, end)


@lru_cache(maxsize=256)
def _cached(layout: str, n_q: int, frames: int, begin: bool, end: bool) -> Pattern:
    return _build(layout, n_q, frames, begin, end)


def _build(layout: str, n_q: int, frames: int, begin: bool, end: bool) -> Pattern:
    b = int(begin)
    k = torch.arange(n_q)[:, None]
    t = torch.arange(frames)[None, :]
    if layout in ("flatten", "codebook"):
        streams, length = 1, n_q * frames + b + int(end)
        col = b + (t * n_q + k if layout == "flatten" else k * frames + t)
        cells = col
    else:
        streams = n_q
        lag = n_q - 1 if layout == "delay" else 0
        length = frames + lag + b + int(end)
        col = b + t + (k if lag else 0)
        cells = k * length + col
    code_cells = cells.reshape(-1)
    stream_of_code = k if streams > 1 else torch.zeros_like(k)
    code_order = torch.argsort((col * streams + stream_of_code).reshape(-1), stable=True)

    s = torch.arange(streams)
    fill: list[torch.Tensor] = []
    kinds: list[torch.Tensor] = []
    if begin:
        fill.append(s * length)
        kinds.append(torch.full((streams,), BEGIN))
    if end:
        fill.append(s * length + length - 1)
        kinds.append(torch.full((streams,), END))
    if layout == "delay":
        steps = torch.arange(frames + n_q - 1)[:, None]  # body steps, step-major: the report order
        empty = (steps < s) | (steps - s >= frames)
        step, stream = empty.nonzero(as_tuple=True)
        fill.append(stream * length + b + step)
        kinds.append(DELAY + stream)
    fill_cells = torch.cat(fill) if fill else torch.zeros(0, dtype=torch.long)
    fill_kind = torch.cat(kinds) if kinds else torch.zeros(0, dtype=torch.long)

    source = torch.empty(streams * length, dtype=torch.long)
    source[code_cells] = torch.arange(n_q * frames)
    source[fill_cells] = n_q * frames + fill_kind
    return Pattern(streams, length, frames, source, code_cells, code_order, fill_cells, fill_kind)
