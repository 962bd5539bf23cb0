"""Codes files (``.npz``) and the Encoded value: bounded reading, validation of every decoded field, and
the public API's input checks (issue 20). The models here have random weights and are never run where a
check must fail first; decode_items is compared with decode in the same run."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from rvqkit.codec import Codec
from rvqkit.config import ENCODEC_24KHZ, ENCODEC_48KHZ
from rvqkit.encoded import FORMAT, Encoded
from rvqkit.errors import AudioError, BandwidthError, CodesError, RvqkitError
from rvqkit.framing import frames_for_length, segment_count
from rvqkit.model import EncodecModel
from rvqkit.npzfile import NpzReader


@pytest.fixture(scope="module")
def c24() -> Codec:
    torch.manual_seed(0)
    return Codec(EncodecModel(ENCODEC_24KHZ))


@pytest.fixture(scope="module")
def c48() -> Codec:
    torch.manual_seed(1)
    return Codec(EncodecModel(ENCODEC_48KHZ))


def meta(model: str = "encodec_24khz", sr: int = 24000, channels: int = 1, n_q: int = 2, **kw) -> np.ndarray:
    m = {"format": FORMAT, "version": 1, "model": model, "weights_sha256": None, "sample_rate": sr}
    m |= {"channels": channels, "bandwidth": 1.5 * n_q * (2 if sr == 48000 else 1), "n_q": n_q} | kw
    return np.frombuffer(json.dumps(m).encode(), dtype=np.uint8)


def write_npz(path: Path, compressed: bool = False, **arrays: np.ndarray) -> Path:
    with open(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return path


def small24(**over) -> dict[str, np.ndarray]:
    """A valid 24 kHz file's arrays: one item of 3200 samples, 10 frames, 2 codebooks."""
    arrays = {
        "codes": np.arange(20, dtype=np.int16).reshape(1, 2, 10),
        "lengths": np.array([3200], dtype=np.int64),
        "frame_lengths": np.array([10], dtype=np.int64),
        "meta": meta(),
    }
    return arrays | over


def huge48(length: int = 10**12) -> dict[str, np.ndarray]:
    """A 3 KB 48 kHz file declaring ``length`` samples (the issue's reproduction)."""
    return {
        "codes": np.zeros((1, 2, 10), dtype=np.int16),
        "lengths": np.array([length], dtype=np.int64),
        "frame_lengths": np.array([frames_for_length(ENCODEC_48KHZ, length)], dtype=np.int64),
        "scales": np.ones((1, 4), dtype=np.float32),
        "meta": meta("encodec_48khz", 48000, 2),
    }


# -- round trips -----------------------------------------------------------------------------------------
def test_save_load_and_bytes_round_trip(tmp_path):
    enc = Encoded(
        torch.randint(0, 1024, (2, 8, 10)),
        torch.rand(2, 3) + 0.1,
        torch.tensor([3000, 2000]),
        torch.tensor([10, 7]),
        48000,
        2,
        12.0,
        "encodec_48khz",
        "ab" * 32,
    )
    path = tmp_path / "c.npz"
    enc.save(path)
    for back in (
        Encoded.load(path),
        Encoded.from_bytes(path.read_bytes()),
        Encoded.from_bytes(enc.to_bytes()),
    ):
        assert torch.equal(back.codes, enc.codes) and torch.equal(back.scales, enc.scales)
        assert torch.equal(back.lengths, enc.lengths) and torch.equal(back.frame_lengths, enc.frame_lengths)
        assert back.meta() == enc.meta() and back.codes.dtype == torch.int64
    assert [t.shape for t in enc.items()] == [(8, 10), (8, 7)]
    assert torch.equal(enc.items()[1], enc.codes[1, :, :7])
    with pytest.raises(CodesError, match="exists"):
        enc.save(path)
    enc.save(path, overwrite=True)  # atomic: no temporary file is left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


def test_other_byte_orders_and_layouts_load(tmp_path):
    a = small24(
        codes=np.asfortranarray(np.arange(20, dtype=">i4").reshape(1, 2, 10)),
        lengths=np.array([3200], dtype=">u4"),
    )
    enc = Encoded.load(write_npz(tmp_path / "c.npz", **a))
    assert enc.codes.tolist() == np.arange(20).reshape(1, 2, 10).tolist() and int(enc.lengths[0]) == 3200
    # compressed files written by others load too, when they are not absurdly compressed
    rng = np.random.default_rng(0)
    b = small24(codes=rng.integers(0, 1024, (1, 2, 10), dtype=np.int16))
    assert Encoded.load(write_npz(tmp_path / "z.npz", compressed=True, **b)).codes.shape == (1, 2, 10)


# -- the reproductions ---------------------------------------------------------------------------
def test_huge_declared_length_fails_fast(tmp_path, c48):
    path = write_npz(tmp_path / "huge.npz", **huge48())
    assert path.stat().st_size < 4096
    t = time.perf_counter()
    with pytest.raises(CodesError, match="allowed"):
        Encoded.load(path)
    # the same fields in memory, past the loader: check_encoded compares frames arithmetically first
    a = huge48()
    enc = Encoded(
        torch.from_numpy(a["codes"].astype(np.int64)),
        torch.ones(1, 4),
        torch.tensor([10**12]),
        torch.from_numpy(a["frame_lengths"]),
        48000,
        2,
        3.0,
        "encodec_48khz",
    )
    with pytest.raises(CodesError, match="frames declared"):
        c48.check_encoded(enc)
    with pytest.raises(CodesError):
        c48.decode(enc)
    assert time.perf_counter() - t < 2.0


def test_cli_decode_of_huge_length_is_one_line(tmp_path):
    path = write_npz(tmp_path / "huge.npz", **huge48())
    t = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "rvqkit", "decode", str(path), str(tmp_path / "o.wav")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "allowed" in res.stderr and not (tmp_path / "o.wav").exists()
    assert time.perf_counter() - t < 60  # includes starting Python and importing torch


def test_max_samples_bounds_the_cost(tmp_path):
    path = write_npz(tmp_path / "c.npz", **small24())
    assert Encoded.load(path, max_samples=3200).batch_size == 1
    with pytest.raises(CodesError, match="3199 allowed"):
        Encoded.load(path, max_samples=3199)
    with pytest.raises(CodesError, match="allowed"):
        Encoded.from_bytes(path.read_bytes(), max_samples=100)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0])
def test_bad_scales_refused_by_load(tmp_path, bad):
    a = huge48(3000)
    a["scales"] = np.array([[1.0, bad, 1.0, 1.0]], dtype=np.float32)
    with pytest.raises(CodesError, match="scales"):
        Encoded.load(write_npz(tmp_path / "s.npz", **a))


@pytest.mark.parametrize("bad", [np.nan, 0.0, -0.5])
def test_bad_scales_refused_before_decoding(c48, bad):
    enc = Encoded(
        torch.zeros(1, 2, 10, dtype=torch.long),
        torch.tensor([[bad]]),
        torch.tensor([3000]),
        torch.tensor([10]),
        48000,
        2,
        3.0,
        "encodec_48khz",
    )
    with pytest.raises(CodesError, match="scales must be finite and > 0"):
        c48.decode(enc)
    enc.scales = torch.tensor([[0.5, 0.0]])  # padding past an item's segments may be zero
    assert c48.decode(enc).shape == (1, 2, 3000)


def test_unknown_missing_and_duplicate_members_refused(tmp_path):
    with pytest.raises(CodesError, match="unexpected member 'extra'"):
        Encoded.load(write_npz(tmp_path / "u.npz", **small24(extra=np.zeros(10**6, dtype=np.uint8))))
    a = small24()
    del a["frame_lengths"]
    with pytest.raises(CodesError, match="missing member"):
        Encoded.load(write_npz(tmp_path / "m.npz", **a))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning, match="Duplicate"):
        for name, arr in [*small24().items(), ("codes", small24()["codes"])]:
            with z.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, arr)
    with pytest.raises(CodesError, match="twice"):
        Encoded.from_bytes(buf.getvalue())


def test_zip_bomb_refused_from_the_header(tmp_path, monkeypatch):
    """savez_compressed of 64 MB of zero codes (a ~70 KB file) is refused without inflating the codes."""
    n = 4_000_000
    a = small24(
        codes=np.zeros((1, 8, n), dtype=np.int16),
        lengths=np.array([n * 320], dtype=np.int64),
        frame_lengths=np.array([n], dtype=np.int64),
        meta=meta(n_q=8),
    )
    path = write_npz(tmp_path / "bomb.npz", compressed=True, **a)
    del a
    assert path.stat().st_size < 200_000
    read: list[str] = []
    real_read = NpzReader.read
    monkeypatch.setattr(NpzReader, "read", lambda self, name: read.append(name) or real_read(self, name))
    t = time.perf_counter()
    with pytest.raises(CodesError, match="expands"):
        Encoded.load(path)
    assert time.perf_counter() - t < 2.0
    assert "codes" not in read  # refused from the zip directory, before any codes byte
    # a header declaring more bytes than the archive holds
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, arr in small24().items():
            head = io.BytesIO()
            shape = (1, 2, 10**9) if name == "codes" else arr.shape
            np.lib.format.write_array_header_1_0(
                head, {"descr": arr.dtype.str, "fortran_order": False, "shape": shape}
            )
            z.writestr(f"{name}.npy", head.getvalue() + arr.tobytes())
    with pytest.raises(CodesError, match="header declares"):
        Encoded.from_bytes(buf.getvalue())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"codes": np.zeros((1, 2, 10), dtype=np.float32)}, "float32, which is not allowed"),
        ({"codes": np.zeros((1, 2, 10), dtype=np.complex64)}, "not allowed"),
        ({"codes": np.zeros((1, 2, 10), dtype=bool)}, "not allowed"),
        ({"codes": np.zeros((2, 10), dtype=np.int16)}, r"\[batch, n_q, frames\]"),
        ({"codes": np.zeros((1, 2, 11), dtype=np.int16)}, "frames"),
        ({"lengths": np.array([3200.0])}, "not allowed"),
        ({"lengths": np.array([0])}, "positive"),
        ({"lengths": np.array([-5])}, "positive"),
        ({"lengths": np.array([3200, 3200])}, "shape"),
        ({"frame_lengths": np.array([11])}, "frames"),
        ({"meta": meta(n_q=3)}, "n_q"),
        ({"meta": meta(sample_rate=True)}, "sample_rate"),
        ({"meta": meta(model=["x"])}, "model"),
        ({"meta": meta(bandwidth="6")}, "bandwidth"),
        ({"meta": meta(format="other")}, "not an rvqkit codes file"),
        ({"meta": np.frombuffer(b"\xff\xfe", dtype=np.uint8)}, "not JSON"),
        ({"meta": np.zeros(3, dtype=np.float32)}, "not allowed"),
    ],
)
def test_malformed_fields_refused(tmp_path, change, message):
    with pytest.raises(CodesError, match=message):
        Encoded.load(write_npz(tmp_path / "bad.npz", **small24(**change)))


def test_garbage_is_a_codes_error(tmp_path):
    for data in (b"", b"PK\x03\x04garbage", b"\x00" * 100, np.zeros(3).tobytes()):
        with pytest.raises(CodesError):
            Encoded.from_bytes(data)
    with pytest.raises(CodesError, match="no such"):
        Encoded.load(tmp_path / "missing.npz")
    with pytest.raises(CodesError, match="folder"):
        Encoded.load(tmp_path)
    pickled = tmp_path / "p.npz"
    np.savez(pickled, codes=np.array([object()], dtype=object))
    with pytest.raises(CodesError):
        Encoded.load(pickled)


def test_check_encoded_fields(c24):
    good = Encoded(
        torch.zeros(1, 2, 10, dtype=torch.long),
        None,
        torch.tensor([3200]),
        torch.tensor([10]),
        24000,
        1,
        1.5,
        "encodec_24khz",
    )
    c24.check_encoded(good)
    for field, value, message in [
        ("codes", torch.full((1, 2, 10), 1024), "out of range"),
        ("codes", torch.full((1, 2, 10), -1), "out of range"),
        ("codes", torch.zeros(1, 2, 10), "integers"),
        ("codes", torch.zeros(1, 2, 10, dtype=torch.complex64), "integers"),
        ("codes", torch.zeros(1, 2, 10, dtype=torch.bool), "integers"),
        ("codes", torch.zeros(0, 2, 10, dtype=torch.long), "no items"),
        ("lengths", torch.tensor([3200.0]), "integers"),
        ("lengths", torch.tensor([-3200]), "positive"),
        ("lengths", torch.tensor([3201]), "does not match"),
        ("frame_lengths", torch.tensor([11]), "does not match"),
    ]:
        bad = Encoded(**{**good.__dict__, field: value})
        with pytest.raises(CodesError, match=message):
            c24.check_encoded(bad)


def test_dequantize_refuses_codes_out_of_range(c24):
    assert c24.dequantize(torch.zeros(1, 2, 5, dtype=torch.long)).shape == (1, 128, 5)
    for codes in (
        torch.full((1, 2, 5), 1024),
        torch.full((1, 2, 5), -1),
        torch.zeros(1, 33, 5, dtype=torch.long),
    ):
        with pytest.raises(CodesError):
            c24.dequantize(codes)


# -- model names from files ------------------------------------------------------------------------------
def test_files_choose_only_known_presets(tmp_path):
    from rvqkit.cli import model_for_file

    assert model_for_file(None, "encodec_48khz", tmp_path) == "facebook/encodec_48khz"
    assert model_for_file(None, "facebook/encodec_24khz", tmp_path) == "facebook/encodec_24khz"
    assert model_for_file("./mine", "evil/repo", tmp_path) == "./mine"
    for named in ("evil/repo", "/etc/passwd", "", None, 3):
        with pytest.raises(RvqkitError, match="--model"):
            model_for_file(None, named, tmp_path)
    path = write_npz(tmp_path / "evil.npz", **small24(meta=meta(model="attacker/weights")))
    res = subprocess.run(
        [sys.executable, "-m", "rvqkit", "decode", str(path), str(tmp_path / "o.wav")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1 and "not a known preset" in res.stderr and "Traceback" not in res.stderr


# -- the public API's input checks -----------------------------------------------------------------------
def test_encode_input_checks(c24):
    x = torch.randn(2, 1, 4000) * 0.1
    cases = [
        (lambda: c24.prepare(x, 24000, lengths=[-1, 100]), "lengths"),
        (lambda: c24.prepare(x, 24000, lengths=[1.5, 100]), "lengths"),
        (lambda: c24.prepare(x, 24000, lengths=[4001, 100]), "lengths"),
        (lambda: c24.prepare(x, 24000, lengths=torch.tensor([10.0, 100.0])), "lengths"),
        (lambda: c24.prepare(x, 24000, lengths=[100]), "lengths"),
        (lambda: c24.prepare(x, True), "sample_rate"),
        (lambda: c24.prepare(x, 24000.0), "sample_rate"),
        (lambda: c24.prepare(torch.zeros(0, 1, 100), 24000), "empty batch"),
        (lambda: c24.prepare([], 24000), "empty batch"),
        (lambda: c24.prepare(torch.tensor(1.0), 24000), "got ()"),
        (lambda: c24.prepare([np.float32(1.0)], 24000), "0-d"),
        (lambda: c24.prepare(np.zeros(100, dtype=complex), 24000), "complex"),
        (lambda: c24.prepare(torch.zeros(100, dtype=torch.complex64), 24000), "complex"),
        (lambda: c24.prepare(np.zeros(100, dtype=bool), 24000), "bool"),
    ]
    for call, message in cases:
        with pytest.raises(AudioError, match=message):
            call()
    for bandwidth in ("6", True, None):
        with pytest.raises(BandwidthError):
            c24.encode(x, 24000, bandwidth=bandwidth)  # type: ignore[arg-type]
    # half-precision tensors are converted to float32 (documented in Codec.prepare)
    y = torch.randn(1, 2400)
    for t in (y.half(), y.bfloat16()):
        got = c24.prepare(t, 24000)[0]
        assert got.dtype == torch.float32 and torch.equal(got, t.float())
    assert [t.shape[-1] for t in c24.prepare(x, 24000, lengths=np.array([4000, 7]))] == [4000, 7]


@pytest.mark.parametrize("which", ["c24", "c48"])
def test_items_and_decode_items_on_a_variable_length_batch(request, which):
    codec: Codec = request.getfixturevalue(which)
    sr, ch = codec.sample_rate, codec.channels
    lengths = [sr // 2 + 1234, sr // 10, sr // 4 + 1]
    x = torch.randn(3, ch, max(lengths)) * 0.1
    enc = codec.encode(x, sr, bandwidth=codec.bandwidths[0], lengths=lengths)
    items = enc.items()
    assert [tuple(t.shape) for t in items] == [(enc.n_q, frames_for_length(codec.config, n)) for n in lengths]
    for i, t in enumerate(items):
        assert torch.equal(t, enc.codes[i, :, : int(enc.frame_lengths[i])])
    padded = codec.decode(enc)
    audio = codec.decode_items(enc)
    assert [tuple(a.shape) for a in audio] == [(ch, n) for n in lengths]
    for i, a in enumerate(audio):
        assert torch.equal(a, padded[i, :, : lengths[i]])
    coarse = codec.decode_items(enc, n_q=1)
    assert torch.equal(coarse[1], codec.decode(enc, n_q=1)[1, :, : lengths[1]])
    if codec.config.normalize:
        assert enc.scales is not None and enc.scales.shape[-1] == segment_count(codec.config, max(lengths))
