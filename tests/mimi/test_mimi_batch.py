"""Mimi batches of items of different lengths (right-padded, with per-item lengths): each item gets the
codes and audio it has alone.

Default (``batched=False``): items run one by one, bit for bit as alone, on any machine. ``batched=True``
(one call, for GPUs): each row's own end padding is reproduced inside the network, so the structure is
the item's alone and only float rounding differs (codes identical except at near-ties). Without
``lengths``, a padded item's last, partial frame reads the padding (transformers#43377): the tests show
that difference is real, so the lengths matter.
"""

from __future__ import annotations

import pytest
import torch
from mimi_helpers import HOP, KINDS, SMALL, SR, differing_codes_are_near_ties, signal

from rvqkit.errors import CodesError
from rvqkit.mimi import random_mimi

pytestmark = pytest.mark.arith

LENGTHS = [SR + 5, int(2.3 * SR) + 1234, SR // 2, 20 * HOP, 3000, 1, 0]


@pytest.fixture(scope="module")
def model():
    return random_mimi(SMALL, seed=6)


@pytest.fixture(scope="module")
def batch():
    items = [signal(KINDS[i % 3], n, seed=i) for i, n in enumerate(LENGTHS)]
    x = torch.zeros(len(items), 1, max(LENGTHS))
    for i, item in enumerate(items):
        x[i, :, : item.shape[-1]] = item[0]
    return items, x, torch.tensor(LENGTHS)


@torch.inference_mode()
def test_items_run_alone_exactly(model, batch):
    items, x, lengths = batch
    codes = model.encode(x, 12, lengths=lengths)
    frames = torch.tensor([model.frames_for_length(n) for n in LENGTHS])
    audio = model.decode(codes, frames=frames)
    assert codes.shape == (len(items), 12, model.frames_for_length(x.shape[-1]))
    for i, item in enumerate(items):
        f = int(frames[i])
        assert bool((codes[i, :, f:] == -1).all())
        assert bool((audio[i, :, f * HOP :] == 0).all())
        if f:
            alone = model.encode(item, 12)
            assert torch.equal(codes[i : i + 1, :, :f], alone)
            assert torch.equal(audio[i : i + 1, :, : f * HOP], model.decode(alone))


@torch.inference_mode()
def test_batched_call_has_each_items_structure(model, batch):
    items, x, lengths = batch
    latent = model.latent(x, lengths)
    codes = model.encode(x, 12, lengths=lengths, batched=True)
    frames = torch.tensor([model.frames_for_length(n) for n in LENGTHS])
    audio = model.decode(codes, frames=frames, batched=True)
    for i, item in enumerate(items):
        f = int(frames[i])
        assert bool((codes[i, :, f:] == -1).all())
        if not f:
            continue
        alone_latent = model.latent(item)
        alone = model.quantizer.encode(alone_latent, 12)
        assert (latent[i : i + 1, :, :f] - alone_latent).abs().max().item() <= 1e-5  # measured ~1e-6
        _, gaps = differing_codes_are_near_ties(model, alone_latent, alone, codes[i : i + 1, :, :f])
        assert all(g < 1e-4 for g in gaps)
        assert (
            audio[i : i + 1, :, : f * HOP] - model.decode(codes[i : i + 1, :, :f])
        ).abs().max().item() <= 1e-5


@torch.inference_mode()
def test_without_lengths_the_padding_reaches_the_last_frame(model, batch):
    items, x, _ = batch
    latent = model.latent(x)
    for i in (0, 2):  # items whose length is not a multiple of 1920 and that are padded in the batch
        alone = model.latent(items[i])
        f = alone.shape[-1]
        assert (
            latent[i, :, : f - 1] - alone[0, :, : f - 1]
        ).abs().max().item() <= 1e-5  # causal: earlier frames
        assert (latent[i, :, f - 1] - alone[0, :, f - 1]).abs().max().item() > 1e-3  # the last frame differs


def test_frames_checked(model):
    codes = torch.zeros(2, 4, 3, dtype=torch.long)
    with pytest.raises(CodesError, match="frames"):
        model.decode(codes, frames=torch.tensor([1, 4]))
