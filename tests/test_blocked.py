"""Long 24 kHz signals run through the network in blocks (``EncodecModel.block_length``) with the
streaming state carried between blocks: the same embeddings and codes as the whole signal at once, and
audio within float rounding."""

from __future__ import annotations

import pytest
import torch
from conftest import make_signal

from rvqkit import Codec


@pytest.fixture
def small_blocks(codec24):
    """Blocks of 1 s so that a few seconds of test audio make several blocks. (Blocks of 0.4 s round
    differently, about 4e-8, in the deepest layers, where they are only 30 frames wide; 0.8 s and
    wider gave identical floats, with one thread and with two.)"""
    before = codec24.model.block_length
    codec24.model.block_length = 24000
    yield 24000
    codec24.model.block_length = before


def _whole(codec: Codec, fn):
    before = codec.model.block_length
    codec.model.block_length = None
    try:
        return fn()
    finally:
        codec.model.block_length = before


@pytest.mark.parametrize("length", [3 * 24000, 3 * 24000 + 1, 5 * 24000 + 4321, 7 * 24000 + 17])
def test_blocked_embeddings_and_codes_equal_whole_signal(codec24, small_blocks, length):
    x = torch.from_numpy(make_signal(length, 1, 24000, seed=length))[None]
    with torch.inference_mode():
        blocked = codec24.model.embed_blocked(x)
        whole = _whole(codec24, lambda: codec24.model.embed_blocked(x))
    assert blocked.shape == whole.shape
    assert torch.equal(blocked, whole)
    enc = codec24.encode(x[0], 24000, bandwidth=24.0)
    ref = _whole(codec24, lambda: codec24.encode(x[0], 24000, bandwidth=24.0))
    assert torch.equal(enc.codes, ref.codes)


def test_blocked_decode_matches_whole_signal(codec24, small_blocks):
    x = make_signal(5 * 24000 + 55, 1, 24000, seed=3)
    enc = codec24.encode(x, 24000, bandwidth=6.0)
    audio = codec24.decode(enc)
    ref = _whole(codec24, lambda: codec24.decode(enc))
    assert audio.shape == ref.shape == (1, 1, x.shape[-1])
    # Transposed convolutions round by width with two threads (about 1e-7); the same codes give the
    # same audio to far below 16-bit resolution (3e-5).
    assert (audio - ref).abs().max().item() <= 1e-5
    assert ref.abs().max().item() > 1e-3


def test_short_signals_do_not_use_blocks(codec24, small_blocks):
    """Up to two blocks the whole signal runs at once (no narrow block, identical floats)."""
    x = torch.from_numpy(make_signal(2 * 24000, 1, 24000, seed=5))[None]
    with torch.inference_mode():
        assert torch.equal(codec24.model.embed_blocked(x), codec24.model.encoder(x))
