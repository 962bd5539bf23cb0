"""Token sequences beside (or instead of) the codes: one ``tokens_<layout>`` column per requested layout,
made by :class:`rvqkit.tokens.TokenLayout` from each item's codes.

Single-stream layouts (``flatten``, ``codebook``) give ``list<int32>`` ``[length]``; multi-stream ones
(``delay``, ``parallel``) give ``list<list<int32>>`` ``[n_q][steps]``. The layout's settings (ids of
the special tokens, offset, vocabulary size) are stored in ``manifest.json`` under ``tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .items import CorpusError


@dataclass(frozen=True)
class TokenSpec:
    """One token column: its name and the :class:`~rvqkit.tokens.TokenLayout` that fills it."""

    column: str
    layout: Any

    def describe(self) -> dict[str, Any]:
        return {"column": self.column, "settings": self.layout.settings()}

    @property
    def field(self) -> pa.Field:
        inner = pa.list_(pa.int32())
        return pa.field(self.column, pa.list_(inner) if self.layout.multi_stream else inner)

    def make(self, codes: np.ndarray) -> np.ndarray:
        """Token ids (int32) of one item's codes ``[n_q, frames]``: ``[length]`` or ``[n_q, steps]``."""
        return self.layout.encode_item(codes.astype(np.int64)).numpy().astype(np.int32)


def token_columns(
    layouts: Sequence[Any],
    n_q: int,
    codebook_size: int = 1024,
    offset: int = 0,
    begin: bool | int = False,
    end: bool | int = False,
) -> list[TokenSpec]:
    """Token specs for layout names (``flatten``, ``codebook``, ``delay``, ``parallel``; built with
    ``n_q`` codebooks and the given ``offset`` / ``begin`` / ``end``) or ready
    :class:`~rvqkit.tokens.TokenLayout` objects (used as they are)."""
    if not layouts:
        return []
    from ..tokens import LAYOUTS, TokenError, TokenLayout

    specs: list[TokenSpec] = []
    for entry in layouts:
        try:
            if isinstance(entry, TokenLayout):
                layout = entry
            elif entry in LAYOUTS:
                layout = TokenLayout(entry, n_q, codebook_size, offset, begin=begin, end=end)
            else:
                raise CorpusError(f"unknown token layout {entry!r}; layouts: {', '.join(LAYOUTS)}")
        except TokenError as e:
            raise CorpusError(f"token layout {entry}: {e}") from e
        if layout.n_q > n_q:
            raise CorpusError(
                f"the {layout.layout} layout takes {layout.n_q} codebooks; the codes hold {n_q}"
            )
        column = f"tokens_{layout.layout}"
        if any(s.column == column for s in specs):
            raise CorpusError(f"token layout {layout.layout} given twice")
        specs.append(TokenSpec(column, layout))
    return specs
