"""Files of any length in bounded memory: chunked encode / decode / roundtrip through the streaming
engine equal offline processing of the whole file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_signal

from rvqkit import AudioError, Codec
from rvqkit.chunked import decode_to_file, encode_file, read_blocks, roundtrip_file


@pytest.fixture(scope="module", params=["24", "48"])
def codec(request):
    _, path = request.getfixturevalue(f"meta_{request.param}k")
    return Codec.from_pretrained(path)


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    """3.3 s of 44.1 kHz stereo: every block is converted and resampled on the way in."""
    path = tmp_path_factory.mktemp("long") / "in.wav"
    sf.write(path, make_signal(int(3.3 * 44100) + 17, 2, 44100, seed=9).T, 44100, subtype="FLOAT")
    return path


def _offline(codec: Codec, path):
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return codec.encode(x.T, sr, bandwidth=6.0)


def test_read_blocks_equals_whole_file_conversion(codec, long_wav):
    x, sr = sf.read(long_wav, dtype="float32", always_2d=True)
    whole = codec.prepare(x.T, sr)[0].numpy()
    blocks = list(read_blocks(long_wav, codec, block_seconds=0.7))
    assert len(blocks) > 3
    assert np.array_equal(np.concatenate(blocks, axis=-1), whole)


def test_chunked_encode_equals_offline(codec, long_wav):
    offline = _offline(codec, long_wav)
    chunked = encode_file(codec, long_wav, 6.0, block_seconds=1.0)
    assert torch.equal(chunked.lengths, offline.lengths)
    assert chunked.codes.shape == offline.codes.shape
    # Blocks of >= 1 s keep every layer's tensors wide, as in the whole-file computation.
    assert torch.equal(chunked.codes, offline.codes)
    if offline.scales is not None:
        assert torch.equal(chunked.scales, offline.scales)


def test_int16_codes_save_the_same_file(codec, long_wav, tmp_path):
    """``codes_dtype=torch.int16`` (what ``rvqkit encode`` keeps in memory) writes the same codes file."""
    from rvqkit import Encoded

    wide = encode_file(codec, long_wav, 6.0, block_seconds=1.0)
    narrow = encode_file(codec, long_wav, 6.0, block_seconds=1.0, codes_dtype=torch.int16)
    assert narrow.codes.dtype == torch.int16 and torch.equal(narrow.codes.long(), wide.codes)
    wide.save(tmp_path / "wide.npz")
    narrow.save(tmp_path / "narrow.npz")
    a, b = Encoded.load(tmp_path / "wide.npz"), Encoded.load(tmp_path / "narrow.npz")
    assert torch.equal(a.codes, b.codes) and torch.equal(a.lengths, b.lengths)
    with pytest.raises(ValueError, match="codes_dtype"):
        encode_file(codec, long_wav, 6.0, codes_dtype=torch.int32)


def test_chunked_decode_and_roundtrip_equal_offline(codec, long_wav, tmp_path):
    offline = _offline(codec, long_wav)
    ref = codec.decode(offline)[0].numpy()
    out = tmp_path / "dec.wav"
    n = decode_to_file(codec, offline, out, block_frames=40)
    got, sr = sf.read(out, dtype="float32", always_2d=True)
    assert sr == codec.sample_rate and n == ref.shape[-1] == got.shape[0]
    pcm = np.clip(ref, -1, 1).T
    assert np.abs(got - pcm).max() <= 1.5 / 32768  # 16-bit output
    rt = tmp_path / "rt.wav"
    roundtrip_file(codec, long_wav, rt, 6.0, block_seconds=1.0)
    got_rt, _ = sf.read(rt, dtype="float32", always_2d=True)
    assert got_rt.shape == got.shape
    assert np.abs(got_rt - pcm).max() <= 1.5 / 32768
    assert not list(tmp_path.glob(".*.part"))  # temporary files renamed away


def test_failed_write_leaves_nothing(codec, tmp_path):
    bad = tmp_path / "bad.wav"
    sf.write(bad, np.full((5000, 1), np.nan, dtype=np.float32), 24000, subtype="FLOAT")
    out = tmp_path / "out.wav"
    with pytest.raises(AudioError, match="NaN"):
        roundtrip_file(codec, bad, out, 6.0)
    assert not out.exists() and not list(tmp_path.glob(".*.part"))
