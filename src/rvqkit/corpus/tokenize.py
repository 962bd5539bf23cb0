"""Token sequences beside the codes: one ``tokens_<layout>`` column per requested layout, built with
:mod:`rvqkit.tokens` from each item's codes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .items import CorpusError


@dataclass(frozen=True)
class TokenSpec:
    """One token layout to write: its column name and the layout object that makes the sequence."""

    column: str
    layout: Any

    def describe(self) -> dict[str, Any]:
        return {"column": self.column, "settings": self.layout.settings()}

    def make(self, codes: np.ndarray, codebook_size: int) -> np.ndarray:
        """The token ids (int) of one item's codes ``[n_q, frames]``."""
        import torch

        seq = self.layout.encode_item(torch.from_numpy(codes.astype(np.int64)))
        return seq.numpy().astype(np.int32).reshape(-1)


def token_columns(names: Sequence[str], n_q: int, codebook_size: int = 1024) -> list[TokenSpec]:
    """Token specs for layout names (``flatten``, ``delay`` ...) as :mod:`rvqkit.tokens` defines them."""
    if not names:
        return []
    try:
        from ..tokens import LAYOUTS, TokenLayout
    except ImportError:
        raise CorpusError("token layouts need rvqkit.tokens, which this install does not have") from None
    specs = []
    for name in names:
        if name not in LAYOUTS:
            raise CorpusError(f"unknown token layout {name!r}; layouts: {', '.join(LAYOUTS)}")
        layout = TokenLayout(name, n_q=n_q, codebook_size=codebook_size)
        specs.append(TokenSpec(f"tokens_{name}", layout))
    return specs
