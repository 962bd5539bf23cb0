"""Acceptance test of the core codec: rvqkit gives the same codes (identical) and the same audio
(max abs difference <= 1e-4) as transformers' EncodecModel and Meta's encodec, for both models, every
bandwidth, batches of items of different lengths, inputs from 0.1 s to 30 s."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import hf_reference, make_signal, meta_reference

from rvqkit import Codec

TOL = 1e-4
MODELS = {"24": (24000, 1), "48": (48000, 2)}


def _lengths(sr: int) -> list[int]:
    # 0.1 s and 1.37 s, neither a multiple of the 320-sample hop; the second spans two 48 kHz segments.
    return [int(0.1 * sr) + 7, int(1.37 * sr) + 11]


def _check_batch(codec: Codec, reference, ref_model, sr: int, channels: int, bandwidth: float) -> None:
    items = [make_signal(n, channels, sr, seed=i) for i, n in enumerate(_lengths(sr))]
    encoded = codec.encode(items, sr, bandwidth=bandwidth)
    audio = codec.decode(encoded)
    assert encoded.n_q == codec.n_q_for(bandwidth)
    for i, x in enumerate(items):
        ref_codes, ref_audio = reference(ref_model, x, bandwidth)
        nf = int(encoded.frame_lengths[i])
        assert ref_codes.shape[-1] == nf
        mismatches = int((encoded.codes[i : i + 1, :, :nf] != ref_codes).sum())
        assert mismatches == 0, f"{mismatches} code mismatches at {bandwidth} kbps, item {i}"
        diff = (audio[i : i + 1, :, : x.shape[-1]] - ref_audio).abs().max().item()
        assert diff <= TOL, f"max abs audio difference {diff:.3g} at {bandwidth} kbps, item {i}"
        assert ref_audio.abs().max() > 1e-3  # the comparison is not between two silences
        assert torch.all(audio[i, :, x.shape[-1] :] == 0)
    assert len(torch.unique(encoded.codes[:, 0])) > 5  # random weights still use many codes


@pytest.mark.parametrize("which", ["24", "48"])
def test_batch_matches_meta_every_bandwidth(which, request):
    ref_model, path = request.getfixturevalue(f"meta_{which}k")
    codec = Codec.from_pretrained(path)
    sr, ch = MODELS[which]
    for bw in codec.bandwidths:
        _check_batch(codec, meta_reference, ref_model, sr, ch, bw)


@pytest.mark.parametrize("which", ["24", "48"])
def test_batch_matches_transformers_every_bandwidth(which, request):
    ref_model, folder = request.getfixturevalue(f"hf_{which}k")
    codec = Codec.from_pretrained(folder)
    sr, ch = MODELS[which]
    for bw in codec.bandwidths:
        _check_batch(codec, hf_reference, ref_model, sr, ch, bw)


@pytest.mark.parametrize("which", ["24", "48"])
def test_padded_batch_with_lengths_equals_items(which, request):
    """A zero-padded ``[B, C, T]`` batch with per-item lengths gives each item's own encoding."""
    _, path = request.getfixturevalue(f"meta_{which}k")
    codec = Codec.from_pretrained(path)
    sr, ch = MODELS[which]
    lengths = _lengths(sr)
    items = [make_signal(n, ch, sr, seed=i) for i, n in enumerate(lengths)]
    padded = np.zeros((2, ch, max(lengths)), dtype=np.float32)
    for i, x in enumerate(items):
        padded[i, :, : x.shape[-1]] = x
    a = codec.encode(padded, sr, bandwidth=6.0, lengths=lengths)
    b = codec.encode(items, sr, bandwidth=6.0)
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(a.frame_lengths, b.frame_lengths)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["24", "48"])
def test_30_seconds_matches_both_references(which, request):
    """30 s input: codes at the largest bandwidth, audio decoded from every codebook prefix."""
    meta_model, path = request.getfixturevalue(f"meta_{which}k")
    hf_model, folder = request.getfixturevalue(f"hf_{which}k")
    sr, ch = MODELS[which]
    x = make_signal(30 * sr + 123, ch, sr, seed=3)
    for ref, model, src in ((meta_reference, meta_model, path), (hf_reference, hf_model, folder)):
        codec = Codec.from_pretrained(src)
        bw = codec.bandwidths[-1]
        encoded = codec.encode(x, sr, bandwidth=bw)
        ref_codes, ref_audio = ref(model, x, bw)
        assert int((encoded.codes != ref_codes).sum()) == 0
        assert (codec.decode(encoded) - ref_audio).abs().max().item() <= TOL
    # coarse decoding = decoding the codes of a smaller bandwidth (prefix property), against Meta
    codec = Codec.from_pretrained(path)
    encoded = codec.encode(x, sr, bandwidth=codec.bandwidths[-1])
    bw = codec.bandwidths[0]
    ref_codes, ref_audio = meta_reference(meta_model, x, bw)
    n_q = codec.n_q_for(bw)
    assert torch.equal(encoded.codes[:, :n_q], ref_codes)
    assert (codec.decode(encoded, n_q=n_q) - ref_audio).abs().max().item() <= TOL


def test_step_by_step_path_composes_to_encode_decode(meta_24k):
    _, path = meta_24k
    codec = Codec.from_pretrained(path)
    x = make_signal(12345, 1, 24000)
    emb, scales = codec.embed(x, 24000)
    assert scales is None and emb.shape == (1, 128, 39)
    steps = codec.quantize(emb, n_q=8)
    codes = torch.stack([s.indices for s in steps], dim=1)
    encoded = codec.encode(x, 24000, bandwidth=6.0)
    assert torch.equal(codes, encoded.codes)
    norms = [s.residual.norm().item() for s in steps]
    assert norms == sorted(norms, reverse=True)  # each layer removes some of the residual
    audio = codec.synthesize(codec.dequantize(codes))[..., : x.shape[-1]]
    assert (audio - codec.decode(encoded)).abs().max().item() <= TOL
