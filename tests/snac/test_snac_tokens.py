"""Orpheus's 7-tokens-per-frame layout of SNAC 24 kHz codes: against the loop Orpheus's data preparation
uses, exact round trips, and one CodesError per malformed input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from snac_helpers import SMALL_ATTN, signals

from rvqkit.errors import CodesError
from rvqkit.snac import random_snac
from rvqkit.snac.tokens import ORPHEUS_OFFSET, orpheus_flatten, orpheus_unflatten


def orpheus_reference(codes: list[torch.Tensor]) -> list[int]:
    """The loop of Orpheus's fine-tuning data preparation (``tokenise_audio``), for item 0."""
    all_codes = []
    for i in range(codes[0].shape[1]):
        all_codes.append(codes[0][0][i].item() + 128266)
        all_codes.append(codes[1][0][2 * i].item() + 128266 + 4096)
        all_codes.append(codes[2][0][4 * i].item() + 128266 + (2 * 4096))
        all_codes.append(codes[2][0][(4 * i) + 1].item() + 128266 + (3 * 4096))
        all_codes.append(codes[1][0][(2 * i) + 1].item() + 128266 + (4 * 4096))
        all_codes.append(codes[2][0][(4 * i) + 2].item() + 128266 + (5 * 4096))
        all_codes.append(codes[2][0][(4 * i) + 3].item() + 128266 + (6 * 4096))
    return all_codes


def random_codes(batch: int, frames: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 4096, (batch, frames * n), generator=g) for n in (1, 2, 4)]


def test_matches_orpheus_and_round_trips():
    codes = random_codes(3, 11)
    tokens = orpheus_flatten(codes)
    assert tokens.shape == (3, 77) and tokens.dtype == torch.int64
    for b in range(3):
        assert tokens[b].tolist() == orpheus_reference([c[b : b + 1] for c in codes])
    back = orpheus_unflatten(tokens)
    assert all(torch.equal(x, y) for x, y in zip(back, codes, strict=True))
    one = orpheus_unflatten(tokens[1])  # 1-D: one item
    assert all(torch.equal(x[0], y[1]) for x, y in zip(one, codes, strict=True))
    # another offset, and the empty sequence
    shifted = orpheus_flatten(codes, offset=0)
    assert torch.equal(shifted, tokens - ORPHEUS_OFFSET)
    assert all(torch.equal(x, y) for x, y in zip(orpheus_unflatten(shifted, offset=0), codes, strict=True))
    empty = orpheus_unflatten(torch.zeros(1, 0, dtype=torch.long))
    assert [c.shape for c in empty] == [(1, 0)] * 3


def test_model_codes_decode_the_same_after_a_round_trip():
    """Codes of a model with the 24 kHz model's levels (strides 4, 2, 1; 4096 entries)."""
    cfg = dataclasses.replace(SMALL_ATTN, vq_strides=(4, 2, 1), codebook_size=4096, name="orpheus-like")
    model = random_snac(cfg, seed=6)
    codes = model.encode(signals(cfg.sampling_rate, 0.9, seed=1)["chirp"])
    back = orpheus_unflatten(orpheus_flatten(codes))
    assert torch.equal(model.decode(back), model.decode(codes))


def test_errors():
    codes = random_codes(1, 4)
    tokens = orpheus_flatten(codes)
    with pytest.raises(CodesError, match="3 levels of codes, got 4 levels"):
        orpheus_flatten([*codes, codes[0]])
    with pytest.raises(CodesError, match="level 1 has shape \\(1, 7\\), expected \\(1, 8\\)"):
        orpheus_flatten([codes[0], codes[1][:, :7], codes[2]])
    with pytest.raises(CodesError, match="level 2 must be an integer tensor"):
        orpheus_flatten([codes[0], codes[1], codes[2].float()])
    with pytest.raises(CodesError, match="level 0 has values outside 0..4095"):
        orpheus_flatten([codes[0] + 4096, codes[1], codes[2]])
    with pytest.raises(CodesError, match="7 per frame; got 27 tokens, 6 too many"):
        orpheus_unflatten(tokens[:, :27])
    bad = tokens.clone()
    bad[0, 9] = bad[0, 8]  # position 1's id where position 2 belongs
    with pytest.raises(
        CodesError, match="token 9 of item 0 .* position 2 of a frame takes ids 136458..140553"
    ):
        orpheus_unflatten(bad)
    with pytest.raises(CodesError, match="integer tensor"):
        orpheus_unflatten(tokens.float())
    with pytest.raises(CodesError, match="integer tensor"):
        orpheus_unflatten(tokens.tolist())
