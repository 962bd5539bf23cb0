"""Orpheus's flattening of SNAC 24 kHz codes: 7 tokens per coarsest frame, and back, exactly.

The 24 kHz model has 3 levels at 12, 23 and 47 Hz (``vq_strides`` 4, 2, 1): each coarsest frame ``j``
holds 1 + 2 + 4 codes. Orpheus TTS (canopylabs) writes them in this order, position ``k`` = 0..6 of the
frame's group adding ``k * 4096`` so that each position has its own 4096 token ids, all after
``offset`` (128266 = Llama-3's 128256 + Orpheus's 10 special ids)::

    k:     0         1           2           3             4             5             6
    code:  c0[j]     c1[2j]      c2[4j]      c2[4j+1]      c1[2j+1]      c2[4j+2]      c2[4j+3]

Pure functions on integer tensors (no model needed); codes ``[B, frames_i]`` coarsest first, as
:meth:`rvqkit.snac.SnacModel.encode` returns them, and tokens ``[B, 7 * frames_0]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import CodesError

ORPHEUS_OFFSET = 128266  # id of position 0's code 0 in Orpheus's Llama-3 vocabulary
CODEBOOK_SIZE = 4096
TOKENS_PER_FRAME = 7
#: (level, index within the coarsest frame's block of that level) of each of the 7 positions
ORPHEUS_ORDER = ((0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (2, 2), (2, 3))
_STRIDES = (4, 2, 1)  # finest frames per frame of each level, coarsest first


def _as_codes(codes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if not isinstance(codes, list | tuple) or len(codes) != 3:
        got = f"{len(codes)} levels" if isinstance(codes, list | tuple) else type(codes).__name__
        raise CodesError(f"the Orpheus layout needs the 24 kHz model's 3 levels of codes, got {got}")
    out = []
    for i, c in enumerate(codes):
        if not isinstance(c, torch.Tensor) or c.dim() != 2 or c.is_floating_point() or c.is_complex():
            what = f"{c.dtype} {tuple(c.shape)}" if isinstance(c, torch.Tensor) else type(c).__name__
            raise CodesError(f"codes level {i} must be an integer tensor [batch, frames], got {what}")
        out.append(c.long())
    batch, frames = out[0].shape
    for i, c in enumerate(out):
        want = (batch, frames * (4 // _STRIDES[i]))
        if tuple(c.shape) != want:
            raise CodesError(
                f"codes level {i} has shape {tuple(c.shape)}, expected {want} (1 + 2 + 4 codes per frame)"
            )
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= CODEBOOK_SIZE):
            raise CodesError(f"codes level {i} has values outside 0..{CODEBOOK_SIZE - 1}")
    return out


def orpheus_flatten(codes: Sequence[torch.Tensor], offset: int = ORPHEUS_OFFSET) -> torch.Tensor:
    """Token ids ``[B, 7 * frames_0]`` (int64) of 24 kHz SNAC codes ``[B, frames_0]``, ``[B, 2 frames_0]``,
    ``[B, 4 frames_0]``: per coarsest frame, the 7 codes in Orpheus's order, position ``k`` shifted by
    ``offset + k * 4096``."""
    levels = _as_codes(codes)
    b, f = levels[0].shape
    blocks = [c.view(b, f, -1) for c in levels]  # [B, frames_0, codes of the level per coarsest frame]
    grouped = torch.stack([blocks[level][..., i] for level, i in ORPHEUS_ORDER], dim=-1)
    shift = offset + CODEBOOK_SIZE * torch.arange(TOKENS_PER_FRAME, device=grouped.device)
    return (grouped + shift).reshape(b, f * TOKENS_PER_FRAME)


def orpheus_unflatten(tokens: torch.Tensor, offset: int = ORPHEUS_OFFSET) -> list[torch.Tensor]:
    """The 3 levels of codes (coarsest first) of Orpheus token ids ``[B, 7 * frames_0]`` (or ``[7 * frames_0]``,
    read as one item): the exact inverse of :func:`orpheus_flatten`. A length that is not a multiple of 7,
    or an id outside its position's 4096 ids, is a :class:`CodesError` naming the first bad token."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() not in (1, 2) or tokens.is_floating_point():
        what = (
            f"{tokens.dtype} {tuple(tokens.shape)}"
            if isinstance(tokens, torch.Tensor)
            else type(tokens).__name__
        )
        raise CodesError(f"tokens must be an integer tensor [batch, 7 * frames] or [7 * frames], got {what}")
    t = tokens.long() if tokens.dim() == 2 else tokens.long().view(1, -1)
    b, n = t.shape
    if n % TOKENS_PER_FRAME:
        raise CodesError(f"Orpheus tokens come 7 per frame; got {n} tokens, {n % TOKENS_PER_FRAME} too many")
    f = n // TOKENS_PER_FRAME
    shift = offset + CODEBOOK_SIZE * torch.arange(TOKENS_PER_FRAME, device=t.device)
    grouped = t.view(b, f, TOKENS_PER_FRAME) - shift
    bad = (grouped < 0) | (grouped >= CODEBOOK_SIZE)
    if bool(bad.any()):
        row, frame, k = (int(i) for i in bad.nonzero()[0])
        tok = int(t[row, frame * TOKENS_PER_FRAME + k])
        lo = offset + k * CODEBOOK_SIZE
        raise CodesError(
            f"token {frame * TOKENS_PER_FRAME + k} of item {row} is {tok}: position {k} of a frame takes ids "
            f"{lo}..{lo + CODEBOOK_SIZE - 1}"
        )
    out = []
    for level, stride in enumerate(_STRIDES):
        ks = sorted(
            (i, k) for k, (lv, i) in enumerate(ORPHEUS_ORDER) if lv == level
        )  # positions, in time order
        out.append(torch.stack([grouped[..., k] for _, k in ks], dim=-1).reshape(b, f * (4 // stride)))
    return out
