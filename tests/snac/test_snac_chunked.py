"""Chunked processing of long inputs (SNAC is not causal, so this is overlap, not streaming): the chunk
grid, the shapes, and the difference from whole-input processing."""

from __future__ import annotations

import pytest
import torch
from snac_helpers import SMALL_ATTN, SMALL_PLAIN, signals

from rvqkit.errors import CodesError
from rvqkit.snac import random_snac
from rvqkit.snac.chunked import (
    chunk_multiple,
    chunk_plan,
    decode_chunked,
    decoder_context,
    encode_chunked,
    encoder_context,
)


@pytest.fixture(scope="module", params=[SMALL_ATTN, SMALL_PLAIN], ids=lambda c: c.name)
def model(request):
    return random_snac(request.param, seed=7)


def test_plan_tiles_the_padded_input(model):
    m = chunk_multiple(model.config)
    for length in (1, 5 * m + 3, 40 * m):
        plan = chunk_plan(model, length, chunk=4 * m + 1, overlap=m // 2)
        assert plan[0][0] == 0 and plan[-1][1] == model.padded_length(length)
        for (s, e, a, b), nxt in zip(plan, [*plan[1:], None], strict=True):
            assert all(v % m == 0 for v in (s, e, a, b)) and a <= s < e <= b
            assert e - s <= 5 * m and s - a <= m and b - e <= m  # rounded up to the grid
            if nxt:
                assert nxt[0] == e


def test_chunked_against_whole(model):
    """With the default overlap (the receptive field, rounded up to the grid) each kept code sees the
    signal the whole-input run sees: the codes match but for float rounding by width (bounded at 1 %
    here; docs/snac.md gives the counts measured). Too little overlap changes many codes near the cuts."""
    cfg = model.config
    sig = signals(cfg.sampling_rate, 1.5, seed=5)
    x = torch.cat([sig["chirp"], sig["noise"]], dim=-1)  # 3 s
    whole = model.encode(x)
    m = chunk_multiple(cfg)
    chunk = -(-cfg.sampling_rate // 3 // m) * m  # ~0.33 s: about 9 chunks
    assert encoder_context(model) > 0 and decoder_context(model) > 0
    chunked = encode_chunked(model, x, chunk=chunk)
    assert [c.shape for c in chunked] == [c.shape for c in whole]
    diff = sum(int((a != b).sum()) for a, b in zip(chunked, whole, strict=True))
    total = sum(c.numel() for c in whole)
    assert diff <= total // 100, f"{diff} of {total} codes differ"
    assert len(chunk_plan(model, x.shape[-1], chunk=chunk)) > 4
    # no overlap: frames near each cut see zeros instead of the signal
    cut = encode_chunked(model, x, chunk=chunk, overlap=0)
    assert sum(int((a != b).sum()) for a, b in zip(cut, whole, strict=True)) > diff
    # a prefix of the levels
    assert [c.shape for c in encode_chunked(model, x, chunk=chunk, n_q=1)] == [whole[0].shape]

    audio = model.decode(whole)
    chunk_frames = chunk // cfg.hop_length
    out = decode_chunked(model, whole, chunk_frames=chunk_frames)
    assert out.shape == audio.shape
    assert (out - audio).abs().max() <= 1e-4
    assert decode_chunked(model, whole, chunk_frames=chunk_frames, length=1234).shape == (1, 1, 1234)


def test_errors(model):
    x = torch.randn(1, 1, 3000) * 0.1
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="chunk must be a positive integer"):
            encode_chunked(model, x, chunk=bad)
    with pytest.raises(ValueError, match="overlap must be an integer >= 0"):
        encode_chunked(model, x, overlap=-1)
    codes = model.encode(x)
    with pytest.raises(ValueError, match="chunk_frames must be a positive integer"):
        decode_chunked(model, codes, chunk_frames=0)
    with pytest.raises(CodesError):
        decode_chunked(model, [codes[0].float()])
