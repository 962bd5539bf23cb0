"""How the codes of each codec family become language-model tokens, and back, exactly.

- **Mimi, DAC**: codes are plain ``[n_q, frames]`` at one frame rate, like EnCodec's, so every
  :class:`~rvqkit.tokens.TokenLayout` applies (``flatten``, ``codebook``, ``parallel``, ``delay``).
  Mimi's codebook 0 is its semantic one (distilled from WavLM); the layouts keep it first:
  ``flatten`` puts it first in each frame's group of ``n_q`` tokens, ``parallel`` and ``delay`` make it
  stream 0 (``delay``: codebook k of frame t comes k steps after codebook 0 of that frame), and
  ``codebook`` puts all of codebook 0 before any other codebook (first in the sequence, not per frame).
- **SNAC**: its levels run at several frame rates (24 kHz: 12, 23 and 47 Hz), so a layout that assumes
  one frame rate does not apply. The layout is Orpheus's ``"orpheus"`` flattening of the 24 kHz model
  (:mod:`rvqkit.snac.tokens`: 7 tokens per coarsest frame); any other layout, or SNAC codes of another
  shape (other models' strides), is a :class:`TokenError`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..snac import tokens as snac_tokens
from .patterns import LAYOUTS, TokenLayout
from .vocab import TokenError

FAMILIES = ("mimi", "dac", "snac")
ORPHEUS = "orpheus"
#: layouts whose every frame's tokens start with codebook 0 (single stream) or hold it as stream 0
FIRST_CODEBOOK_FIRST_PER_FRAME = ("flatten", "parallel", "delay")


def family_layouts(family: str) -> list[str]:
    """The token layouts that apply to a family's codes (``"mimi"``, ``"dac"``, ``"snac"``)."""
    if family in ("mimi", "dac"):
        return list(LAYOUTS)
    if family == "snac":
        return [ORPHEUS]
    raise TokenError(f"unknown codec family {family!r}; choose one of: {', '.join(FAMILIES)}")


def _check_layout(family: str, layout: str) -> None:
    allowed = family_layouts(family)
    if layout not in allowed:
        why = (
            " (SNAC's levels run at different frame rates; a one-rate layout does not apply)"
            if family == "snac"
            else ""
        )
        raise TokenError(f"layout {layout!r} does not apply to {family} codes; use {', '.join(allowed)}{why}")


def family_token_layout(
    family: str, layout: str, codebook_size: int, n_q: int, offset: int = 0, **settings: Any
) -> TokenLayout:
    """The :class:`TokenLayout` of Mimi or DAC codes (``n_q`` codebooks of ``codebook_size`` entries);
    ``settings`` are TokenLayout's keywords (``begin``, ``end``, ``pad``, ``delay_pad``, ``shift``)."""
    _check_layout(family, layout)
    if family == "snac":
        raise TokenError(
            "SNAC's Orpheus layout is not a TokenLayout: use family_tokens(codes, 'snac', 'orpheus')"
        )
    # layout: a str _check_layout checked; settings: TokenLayout's keywords, typed loosely by the caller
    return TokenLayout(layout, n_q, codebook_size, offset, **settings)  # type: ignore[arg-type]


def family_tokens(
    codes: Any, family: str, layout: str, codebook_size: int, offset: int | None = None
) -> torch.Tensor:
    """Token ids (int64) of one item's codes as :meth:`rvqkit.families.FamilyCodec.encode` gives them.

    Mimi, DAC: codes ``[n_q, frames]``; ids ``[n_q * frames]`` (single-stream layouts) or
    ``[n_q, steps]`` (``parallel``, ``delay``), made by ``TokenLayout(layout, n_q, codebook_size, offset)``
    (offset default 0). SNAC: the 3 levels of the 24 kHz model (``[frames_0]``, ``[2 frames_0]``,
    ``[4 frames_0]``), layout ``"orpheus"``, ``codebook_size`` 4096; ids ``[7 * frames_0]`` (offset
    default Orpheus's 128266)."""
    _check_layout(family, layout)
    if family == "snac":
        _check_snac_size(codebook_size)
        levels = _snac_levels(codes)
        off = snac_tokens.ORPHEUS_OFFSET if offset is None else offset
        return snac_tokens.orpheus_flatten([c[None] for c in levels], offset=off)[0]
    c = _plain_codes(codes)
    return family_token_layout(family, layout, codebook_size, c.shape[0], offset or 0).encode_item(c)


def family_detokenize(
    ids: Any, family: str, layout: str, codebook_size: int, n_q: int = 0, offset: int | None = None
) -> torch.Tensor | list[torch.Tensor]:
    """The exact inverse of :func:`family_tokens`: Mimi/DAC codes ``[n_q, frames]`` int64 (``n_q`` is
    needed: the ids alone do not say it), SNAC's 3 levels as a list of ``Tensor[frames_i]``. Ids that
    do not decode raise :class:`TokenError` at the first bad one."""
    _check_layout(family, layout)
    if family == "snac":
        _check_snac_size(codebook_size)
        off = snac_tokens.ORPHEUS_OFFSET if offset is None else offset
        t = torch.as_tensor(ids)
        if t.dim() != 1:
            raise TokenError(f"SNAC token ids of one item must be [7 * frames], got shape {tuple(t.shape)}")
        try:
            return [lv[0] for lv in snac_tokens.orpheus_unflatten(t, offset=off)]
        except TokenError:
            raise
        except Exception as e:  # orpheus_unflatten raises CodesError: one TokenError, as the other layouts
            raise TokenError(str(e)) from e
    lay = family_token_layout(family, layout, codebook_size, n_q, offset or 0)
    codes, _ = lay.decode(torch.as_tensor(ids)[None])
    return codes[0]


def _plain_codes(codes: Any) -> torch.Tensor:
    c = torch.as_tensor(codes)
    if c.dim() != 2 or c.is_floating_point() or c.is_complex():
        raise TokenError(f"Mimi/DAC codes must be integers [n_q, frames], got {c.dtype} {tuple(c.shape)}")
    return c.long()


def _snac_levels(codes: Any) -> list[torch.Tensor]:
    if not isinstance(codes, list | tuple) or not all(
        isinstance(c, torch.Tensor) and c.dim() == 1 for c in codes
    ):
        raise TokenError("SNAC codes must be a list of levels, each Tensor[frames_i], coarsest first")
    if len(codes) != 3 or not (codes[1].numel() == 2 * codes[0].numel() == codes[2].numel() // 2):
        shapes = [tuple(c.shape) for c in codes]
        raise TokenError(
            f"the orpheus layout needs the 24 kHz model's 3 levels (frames f, 2f, 4f), got level shapes {shapes}"
        )
    if any(c.is_floating_point() or c.is_complex() for c in codes):
        raise TokenError("SNAC codes must be integer tensors")
    levels = [c.long() for c in codes]
    for i, c in enumerate(levels):
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= snac_tokens.CODEBOOK_SIZE):
            raise TokenError(f"SNAC codes level {i} has values outside 0..{snac_tokens.CODEBOOK_SIZE - 1}")
    return levels


def _check_snac_size(codebook_size: int) -> None:
    if codebook_size != snac_tokens.CODEBOOK_SIZE:
        raise TokenError(
            f"the orpheus layout takes SNAC 24 kHz codes of {snac_tokens.CODEBOOK_SIZE} entries, "
            f"got codebook_size {codebook_size}"
        )


__all__ = [
    "FIRST_CODEBOOK_FIRST_PER_FRAME",
    "ORPHEUS",
    "family_detokenize",
    "family_layouts",
    "family_token_layout",
    "family_tokens",
]
