"""DAC is not causal: no streaming. Long signals in overlapping windows (same codes as the whole signal
once the context covers the receptive field), descript's own chunking reproduced, batches of variable
length coded exactly per item, and bad input refused with one clear error."""

from __future__ import annotations

import pytest
import torch
from test_dac_parity import SMALL_16K, SMALL_44K, signal

from rvqkit.dac import decode_chunked, encode_chunked, encode_like_dac_compress, random_dac
from rvqkit.dac.chunked import _unpadded, dac_delay, dac_output_length, default_context_frames
from rvqkit.errors import AudioError, BandwidthError, CodesError

pytestmark = pytest.mark.arith


@pytest.fixture(scope="module")
def m16():
    return random_dac(SMALL_16K, seed=4)


@pytest.fixture(scope="module")
def m44():
    return random_dac(SMALL_44K, seed=5)


def test_receptive_field_and_default_context(m16, m44):
    """The encoder's reach, from the layers: ~2,500-2,800 samples (8-9 frames of 320) for the 16/24 kHz
    strides, ~4,000 (8 frames of 512) for 44.1 kHz."""
    rf16, rf44 = m16.receptive_field, m44.receptive_field
    assert 2000 < rf16.left < 3500 and 2000 < rf16.right < 3500
    assert 3500 < rf44.left < 5000 and 3500 < rf44.right < 5000
    assert default_context_frames(m16) * 320 > max(rf16.left, rf16.right)


@pytest.mark.parametrize(
    ("model", "seconds", "window"), [("m16", 4.3, 60), ("m16", 3.01, 37), ("m44", 3.2, 100), ("m44", 2.5, 7)]
)
def test_chunked_encode_equals_whole_signal(request, model, seconds, window):
    """With the default context (the receptive field plus a frame), each kept frame reads exactly the
    samples of the whole-signal computation: the same codes (the convolutions round the same for these
    widths on the CPUs tried; a difference would be at a near-tie only)."""
    m = request.getfixturevalue(model)
    sr = m.sampling_rate
    x = signal("chirp", int(seconds * sr), sr, seed=int(seconds * 10))
    whole = m.encode(x)
    chunked = encode_chunked(m, x, window_frames=window)
    assert chunked.shape == whole.shape
    assert torch.equal(chunked, whole), f"{(chunked != whole).sum().item()} codes differ"
    assert torch.equal(encode_chunked(m, x, n_q=3, window_frames=window), whole[:, :3])


def test_chunked_encode_without_context_differs_at_the_seams(m16):
    """Without context the frames beside each seam see zero padding instead of the signal (measured,
    printed; the count depends on the weights)."""
    x = signal("noise", 5 * 16000, 16000, seed=9)
    whole = m16.encode(x)
    for ctx in (0, 2, 4, default_context_frames(m16)):
        d = encode_chunked(m16, x, window_frames=50, context_frames=ctx) != whole
        print(
            f"context {ctx} frames: {int(d.sum())} of {whole.numel()} codes differ, {int(d.any(1).sum())} frames"
        )
    assert (encode_chunked(m16, x, window_frames=50, context_frames=0) != whole).any()


@pytest.mark.parametrize("length", [None, 3 * 16000 + 5, 3 * 16000 - 600])
def test_chunked_decode_matches_whole(m16, length):
    x = signal("chirp", 3 * 16000 + 5, 16000, seed=1)
    codes = m16.encode(x)
    whole = m16.decode(codes, length)
    chunked = decode_chunked(m16, codes, length, window_frames=40)
    assert chunked.shape == whole.shape
    assert (chunked - whole).abs().max().item() <= 1e-5
    assert whole.abs().max().item() > 1e-3


def test_descript_compress_lengths(m16):
    """descript's chunking (padding off, delay padding): windows give exactly ``dac_output_length``
    samples through the unpadded encoder and decoder, so consecutive windows tile the signal."""
    paddings = [c.padding for c in m16.modules() if hasattr(c, "padding")]
    n_samples = 16000
    step = dac_output_length(m16, n_samples)
    assert 0 < step < n_samples
    assert dac_delay(m16) > 0
    with _unpadded(m16), torch.inference_mode():
        out = m16.decoder(
            m16.quantizer.decode(m16.quantizer.encode(m16.encoder(torch.zeros(1, 1, n_samples)), 2))
        )
    assert out.shape[-1] == step
    x = signal("chirp", int(3.3 * 16000), 16000)
    codes = encode_like_dac_compress(m16, x, win_duration=1.0)
    windows = -(-x.shape[-1] // step)
    assert codes.shape[-1] % windows == 0 and codes.shape[-1] >= m16.frames_for_length(x.shape[-1])
    assert [c.padding for c in m16.modules() if hasattr(c, "padding")] == paddings  # restored
    short = signal("chirp", 16000 // 2, 16000)
    assert torch.equal(encode_like_dac_compress(m16, short, win_duration=1.0), m16.encode(short))
    with pytest.raises(ValueError, match="shorter than the model's receptive field"):
        encode_like_dac_compress(m16, x, win_duration=0.3)


def test_batch_of_variable_length_is_exact_per_item(m16):
    """``encode_items`` runs each item at its own length: its codes are the item's alone. Right-padding
    into one batch changes the shorter items' last frames (printed: how many)."""
    lengths = [16000 + 37, 8000 + 1, 24000 + 300, 320, 16000 + 37]
    items = [
        signal(k, n, 16000, seed=i)[0]
        for i, (k, n) in enumerate(zip(["chirp", "noise", "sine", "chirp", "noise"], lengths, strict=True))
    ]
    codes = m16.encode_items(items)
    for x, c in zip(items, codes, strict=True):
        assert torch.equal(c, m16.encode(x[None])[0])
        assert c.shape == (SMALL_16K.num_codebooks, m16.frames_for_length(x.shape[-1]))
    audio = m16.decode_items(codes, lengths)
    for x, c, a in zip(items, codes, audio, strict=True):
        assert a.shape == x.shape
        assert torch.equal(a, m16.decode(c[None], x.shape[-1])[0])
    padded = torch.zeros(len(items), 1, max(lengths))
    for i, x in enumerate(items):
        padded[i, :, : x.shape[-1]] = x
    batch = m16.encode(padded)
    differ = sum(int((batch[i, :, : c.shape[-1]] != c).sum()) for i, c in enumerate(codes))
    print(
        f"right-padded batch: {differ} of {sum(c.numel() for c in codes)} codes differ from each item alone"
    )


def test_bad_input_is_one_clear_error(m16):
    x = signal("sine", 16000, 16000)
    for n_q in (0, 13, 2.5, True):
        with pytest.raises(BandwidthError, match="n_q must be an integer from 1 to 12"):
            m16.encode(x, n_q)
    for bad in (
        torch.zeros(1, 2, 100),
        torch.zeros(100),
        torch.zeros(1, 1, 0),
        torch.zeros(1, 1, 10, dtype=torch.long),
    ):
        with pytest.raises(AudioError):
            m16.encode(bad)
    with pytest.raises(AudioError, match="item 1"):
        m16.encode_items([x[0], torch.zeros(2, 10)])
    codes = m16.encode(x)
    for bad, message in (
        (codes.float(), "integers"),
        (codes[0], "batch, n_q, frames"),
        (codes + 1024, "out of range"),
        (torch.zeros(1, 13, 4, dtype=torch.long), "13 codebooks"),
    ):
        with pytest.raises(CodesError, match=message):
            m16.decode(bad)
    for kwargs in ({"window_frames": 0}, {"window_frames": 2.5}, {"context_frames": -1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            encode_chunked(m16, x, **kwargs)
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            decode_chunked(m16, codes, **kwargs)
    negative = codes.clone()
    negative[0, 0, -1] = -1
    with pytest.raises(CodesError, match="out of range"):
        decode_chunked(m16, negative)
