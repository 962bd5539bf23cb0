"""``.ecdc`` files: byte-for-byte interoperability with Meta's ``encodec`` (both models, with and without
the LM), frame-by-frame writing and reading, the LM and its arithmetic coder, bad files, and the CLI."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch
from conftest import make_signal
from ecdc_helpers import build_meta_lm, meta_compress_module, point_meta_at
from typer.testing import CliRunner

import rvqkit
from rvqkit.bitstream import (
    BitstreamError,
    EcdcHeader,
    EcdcReader,
    EcdcWriter,
    arith,
    bitpack,
    read_ecdc,
    read_header,
    write_ecdc,
)
from rvqkit.compress import compress, decompress
from rvqkit.errors import CodesError, RvqkitError, WeightsError
from rvqkit.lm import load_lm, torch_threads

SECONDS = {"24": 0.6, "48": 1.1}  # 48 kHz: two segments (the second one short)
BANDWIDTH = 6.0


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Both coders on one thread: the LM's rounding depends on the thread count (rvqkit.lm.torch_threads),
    and one thread is several times faster for frame-by-frame work on a busy 2-core machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def lms(meta_encodec, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lms")
    return {w: build_meta_lm(meta_encodec, w, 11 + i, folder) for i, w in enumerate(("24", "48"))}


@pytest.fixture(scope="module")
def codecs(meta_24k, meta_48k):
    return {"24": rvqkit.Codec.from_pretrained(meta_24k[1]), "48": rvqkit.Codec.from_pretrained(meta_48k[1])}


@pytest.fixture
def meta(request, meta_encodec, meta_24k, meta_48k, lms, monkeypatch):
    """(Meta model at BANDWIDTH, Meta's compress module) for the parametrized model, lookups patched."""
    which = request.param
    model = {"24": meta_24k, "48": meta_48k}[which][0]
    point_meta_at(monkeypatch, meta_encodec, model, which, lms[which][0])
    monkeypatch.setattr(model, "bandwidth", BANDWIDTH)
    return which, model, meta_compress_module(meta_encodec)


def signal(which: str, seed: int = 3) -> np.ndarray:
    sr, ch = (24000, 1) if which == "24" else (48000, 2)
    return make_signal(int(SECONDS[which] * sr), ch, sr, seed=seed)


# -- interoperability with Meta's encodec ----------------------------------------------------------------
@pytest.mark.parametrize("use_lm", [False, True], ids=["packed", "lm"])
@pytest.mark.parametrize("meta", ["24", "48"], indirect=True)
def test_interop_both_ways(meta, use_lm, codecs, lms):
    which, model, mc = meta
    codec, lm_path = codecs[which], lms[which][1]
    x = signal(which)
    meta_bytes = mc.compress(model, torch.from_numpy(x), use_lm=use_lm)
    ours = compress(codec, x, codec.sample_rate, BANDWIDTH, use_lm=use_lm, lm=lm_path)
    # Same codes (the codec matches Meta's) → the same bytes, the LM-coded ones included.
    assert ours == meta_bytes
    header = json.loads(meta_bytes[9 : 9 + struct.unpack("!I", meta_bytes[5:9])[0]])
    assert header == {"m": model.name, "al": x.shape[-1], "nc": codec.n_q_for(BANDWIDTH), "lm": use_lm}

    # Meta's file → rvqkit: same codes, same audio.
    meta_audio, meta_sr = mc.decompress(meta_bytes)
    our_audio, sr = decompress(meta_bytes, codec, lm=lm_path)
    assert sr == meta_sr == codec.sample_rate
    assert our_audio.shape == meta_audio.shape == (codec.channels, x.shape[-1])
    assert (our_audio - meta_audio).abs().max() <= 1e-4
    with torch.no_grad():
        frames = model.encode(torch.from_numpy(x)[None])
    enc = read_ecdc(io.BytesIO(meta_bytes), lm=load_lm(lm_path) if use_lm else None)
    assert torch.equal(enc.codes[0], torch.cat([c for c, _ in frames], dim=-1)[0])
    if which == "48":
        assert torch.equal(enc.scales[0], torch.cat([s for _, s in frames], dim=-1)[0])

    # rvqkit's file → Meta's decompress.
    back, _ = mc.decompress(ours)
    assert (back - our_audio).abs().max() <= 1e-4


@pytest.mark.parametrize("meta", ["24"], indirect=True)
def test_frame_count_is_exact_where_metas_reader_rounds_wrong(meta, codecs):
    """Meta's decompress computes a segment's frames as ceil(n / sr * frame_rate) in floating point,
    one too many for some multiples of 320 samples (6720 is the first): it cannot read its own file
    then. rvqkit counts ceil(n / 320) exactly and reads it."""
    which, model, mc = meta
    x = signal(which)[:, :6720]
    data = mc.compress(model, torch.from_numpy(x), use_lm=False)
    audio, _ = decompress(data, codecs[which])
    assert audio.shape == (1, 6720)
    with pytest.raises(EOFError):
        mc.decompress(data)


@pytest.mark.parametrize("meta", ["24", "48"], indirect=True)
def test_lm_makes_different_bytes_and_all_codes_round_trip(meta, codecs, lms):
    """The LM path is really used: its bytes differ from packing and decode to the same codes."""
    which, _, _ = meta
    codec, lm = codecs[which], load_lm(lms[which][1])
    enc = codec.encode(signal(which, seed=8), codec.sample_rate, bandwidth=BANDWIDTH)
    packed, coded = io.BytesIO(), io.BytesIO()
    write_ecdc(packed, enc)
    write_ecdc(coded, enc, lm=lm)
    assert packed.getvalue()[9:] != coded.getvalue()[9:]
    for buf, model_lm in ((packed, None), (coded, lm)):
        back = read_ecdc(io.BytesIO(buf.getvalue()), lm=model_lm)
        assert torch.equal(back.codes, enc.codes)
        assert back.lengths.tolist() == enc.lengths.tolist()
        if enc.scales is not None:
            assert torch.equal(back.scales, enc.scales)


# -- the coder against Meta's ----------------------------------------------------------------------------
def test_arithmetic_coder_identical_to_meta(meta_encodec):
    from encodec.quantization.ac import ArithmeticCoder, build_stable_quantized_cdf

    gen = torch.Generator().manual_seed(1)
    pdfs = torch.softmax(torch.randn(300, 1024, generator=gen) * torch.rand(300, 1, generator=gen) * 20, -1)
    symbols = torch.multinomial(pdfs, 1, generator=gen)[:, 0].tolist()
    fo = io.BytesIO()
    ref = ArithmeticCoder(fo)
    for pdf, s in zip(pdfs, symbols, strict=True):
        ref.push(s, build_stable_quantized_cdf(pdf, 24, check=False))
    ref.flush()
    cdfs = arith.quantized_cdf(pdfs)
    for i in (0, 150, 299):
        assert torch.equal(cdfs[i], build_stable_quantized_cdf(pdfs[i], 24, check=False))
    enc = arith.ArithmeticEncoder()
    out = b""
    for i, s in enumerate(symbols):
        enc.encode(int(cdfs[i, s - 1]) if s else 0, int(cdfs[i, s]))
        out += enc.take_bytes()
    out += enc.finish()
    assert out == fo.getvalue()
    reader = bitpack.BitReader()
    dec = arith.ArithmeticDecoder(reader)
    got = []
    for piece in [out[j : j + 7] for j in range(0, len(out), 7)]:
        reader.feed(piece)
        while len(got) < len(symbols):
            snap = dec.snapshot()
            try:
                got.append(dec.decode(cdfs[len(got)].tolist()))
            except arith.NeedMoreData:
                dec.restore(snap)
                break
    assert got == symbols
    assert reader.available < 8  # all bits but the padding were used


def test_bitpack_identical_to_meta(meta_encodec):
    from encodec.binary import BitPacker

    values = np.random.default_rng(0).integers(0, 1024, 997)
    fo = io.BytesIO()
    ref = BitPacker(10, fo)
    for v in values.tolist():
        ref.push(v)
    ref.flush()
    assert bitpack.pack(values, 10) == fo.getvalue()
    p = bitpack.BitPacker(10)
    pieces = b"".join(p.push(values[i : i + 13]) for i in range(0, len(values), 13)) + p.flush()
    assert pieces == fo.getvalue()
    assert np.array_equal(bitpack.unpack(pieces, 10, len(values)), values)


# -- frame by frame --------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_lm", [False, True], ids=["packed", "lm"])
@pytest.mark.parametrize("which", ["24", "48"])
def test_frame_by_frame_write_and_read_while_growing(which, use_lm, codecs, lms):
    codec = codecs[which]
    lm = load_lm(lms[which][1]) if use_lm else None
    enc = codec.encode(signal(which, seed=5), codec.sample_rate, bandwidth=BANDWIDTH)
    whole = io.BytesIO()
    write_ecdc(whole, enc, lm=lm)
    header = EcdcHeader(codec.name, int(enc.lengths[0]), enc.n_q, use_lm)
    frames = header.segment_frames()

    def write_live(fo, audio_length):
        """Segments in pieces of 7 frames; yields after each piece (a live encoder would)."""
        w = EcdcWriter(fo, codec.name, enc.n_q, audio_length=audio_length, lm=lm)
        f0 = 0
        for i, nf in enumerate(frames):
            w.begin_segment(float(enc.scales[0, i]) if enc.scales is not None else None)
            for t in range(0, nf, 7):
                w.write_frames(enc.codes[0, :, f0 + t : f0 + min(t + 7, nf)])
                yield
            f0 += nf
        w.close(int(enc.lengths[0]))
        yield

    # Known length: the same bytes as writing the whole thing.
    known = io.BytesIO()
    for _ in write_live(known, int(enc.lengths[0])):
        pass
    assert known.getvalue() == whole.getvalue()

    # Unknown length (live): a reader follows the growing buffer and gets frames before the end.
    live = io.BytesIO()
    reader, got, seen, early = EcdcReader(lm), [], 0, 0
    for _ in write_live(live, None):
        data = live.getvalue()
        got += reader.feed(data[seen:])
        seen = len(data)
        if not reader.done and reader.header is not None:
            head = EcdcHeader.parse_meta(data[9 : 9 + reader._meta_size])  # what a follower re-reads
            if not head.live:
                reader.set_audio_length(head.audio_length)
                got += reader.feed(b"")
            elif got:
                early = max(early, sum(c.codes.shape[1] for c in got))
    reader.finish()
    assert early > 0  # frames were readable while the file was still being written
    codes = torch.cat([c.codes for c in got], dim=1)
    assert torch.equal(codes, enc.codes[0])
    if enc.scales is not None:
        assert [c.scale for c in got if c.codes.shape[1]] == [
            float(enc.scales[0, c.segment]) for c in got if c.codes.shape[1]
        ]
    # The finished live file is a valid .ecdc (JSON padded with spaces) with the same payload.
    back = read_ecdc(io.BytesIO(live.getvalue()), lm=lm)
    assert torch.equal(back.codes, enc.codes)
    assert live.getvalue()[-len(whole.getvalue()) + 70 :] == whole.getvalue()[-len(whole.getvalue()) + 70 :]


def test_follow_a_file_being_written(codecs, lms, tmp_path):
    """A writer thread appends frames to a file on disk; follow_ecdc reads them as they land."""
    import threading

    from rvqkit.bitstream import follow_ecdc

    codec = codecs["24"]
    lm = load_lm(lms["24"][1])
    enc = codec.encode(signal("24", seed=9), codec.sample_rate, bandwidth=BANDWIDTH)
    path = tmp_path / "live.ecdc"
    started, step = threading.Event(), threading.Semaphore(0)

    def write():
        with open(path, "wb") as f:
            w = EcdcWriter(f, codec.name, enc.n_q, lm=lm)
            started.set()
            for t in range(0, enc.codes.shape[-1], 9):
                w.write_frames(enc.codes[0, :, t : t + 9])
                f.flush()
                step.acquire(timeout=5)  # wait for the reader to see some frames
            w.close(int(enc.lengths[0]))

    thread = threading.Thread(target=write)
    thread.start()
    started.wait(5)
    got, during = [], 0
    for chunk in follow_ecdc(path, lm=lm, poll_s=0.01, idle_timeout_s=20):
        got.append(chunk)
        if thread.is_alive():
            during += chunk.codes.shape[1]
        step.release()
    for _ in range(100):
        step.release()
    thread.join()
    assert during > 0
    assert torch.equal(torch.cat([c.codes for c in got], dim=1), enc.codes[0])


def test_live_file_opens_in_meta(meta_encodec, meta_24k, codecs, lms, monkeypatch):
    model = meta_24k[0]
    point_meta_at(monkeypatch, meta_encodec, model, "24", lms["24"][0])
    codec = codecs["24"]
    enc = codec.encode(signal("24"), codec.sample_rate, bandwidth=BANDWIDTH)
    fo = io.BytesIO()
    w = EcdcWriter(fo, codec.name, enc.n_q, lm=load_lm(lms["24"][1]))
    for t in range(0, enc.codes.shape[-1], 10):
        w.write_frames(enc.codes[0, :, t : t + 10])
    w.close(int(enc.lengths[0]))
    audio, _ = meta_compress_module(meta_encodec).decompress(fo.getvalue())
    assert (audio - codec.decode(enc)[0]).abs().max() <= 1e-4


def test_writer_refuses_wrong_frames(codecs):
    codec = codecs["48"]
    w = EcdcWriter(io.BytesIO(), codec.name, 4, audio_length=48000)
    with pytest.raises(BitstreamError, match="begin_segment"):
        w.write_frames(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(BitstreamError, match="scale"):
        w.begin_segment(None)
    w.begin_segment(0.5)
    with pytest.raises(BitstreamError, match="out of range"):
        w.write_frames(torch.full((4, 2), 1024))
    with pytest.raises(BitstreamError, match=r"\[4, frames\]"):
        w.write_frames(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(BitstreamError, match="holds 150 frames"):
        w.write_frames(torch.zeros(4, 151, dtype=torch.long))
    with pytest.raises(BitstreamError, match="segments written|frames"):
        w.close()
    with pytest.raises(BitstreamError, match="seekable"):

        class Pipe(io.RawIOBase):
            def writable(self):
                return True

            def tell(self):
                raise OSError("not seekable")

        EcdcWriter(Pipe(), codec.name, 4)


# -- bad files -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def valid(codecs):
    codec = codecs["24"]
    enc = codec.encode(signal("24")[:, :9000], codec.sample_rate, bandwidth=BANDWIDTH)
    fo = io.BytesIO()
    write_ecdc(fo, enc)
    return fo.getvalue()


def with_meta(meta: object, raw: bool = False) -> bytes:
    body = meta if raw else json.dumps(meta).encode()
    return b"ECDC" + bytes([0]) + struct.pack("!I", len(body)) + body + b"\x00" * 64


GOOD = {"m": "encodec_24khz", "al": 9000, "nc": 8, "lm": False}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RIFF" + b"\x00" * 40, "not an .ecdc file"),
        (b"ECDC\x01" + b"\x00" * 40, "version 1 is not supported"),
        (b"ECDC\x00\x00", "header is incomplete"),
        (b"ECDC\x00\xff\xff\xff\xff" + b"{}", "metadata length 4294967295 bytes is absurd"),
        (with_meta(b"{not json", raw=True), "not JSON"),
        (with_meta(b"\xff\xfe", raw=True), "not JSON"),
        (with_meta([1, 2]), "expected the keys"),
        (with_meta({"m": "encodec_24khz"}), "expected the keys"),
        (with_meta({**GOOD, "m": "dac_44khz"}), "unknown model 'dac_44khz'"),
        (with_meta({**GOOD, "al": 10**30}), "audio length 1000000000000000000000000000000 samples is absurd"),
        (with_meta({**GOOD, "al": -5}), "absurd"),
        (with_meta({**GOOD, "al": 2.5}), "absurd"),
        (with_meta({**GOOD, "al": True}), "absurd"),
        (with_meta({**GOOD, "nc": 0}), "0 codebooks"),
        (with_meta({**GOOD, "nc": 33}), "33 codebooks"),
        (with_meta({**GOOD, "nc": 10**12}), "codebooks"),
        (with_meta({**GOOD, "lm": "yes"}), '"lm" must be true or false'),
        (with_meta({**GOOD, "lm": True}), "entropy-coded with the LM"),
        (with_meta({**GOOD, "al": 86400 * 24000}), "truncated .ecdc file"),  # huge but allowed: no allocation
        (
            with_meta({"m": "encodec_48khz", "al": 96000, "nc": 4, "lm": False})[:-64]
            + struct.pack("!f", float("nan")),
            "scale nan",
        ),
        (
            with_meta({"m": "encodec_48khz", "al": 96000, "nc": 4, "lm": False})[:-64]
            + struct.pack("!f", -1.0),
            "scale -1.0",
        ),
    ],
)
def test_bad_files_give_one_clear_error(data, message):
    with pytest.raises(BitstreamError, match=message.replace(".", r"\.").replace("(", r"\(")):
        read_ecdc(io.BytesIO(data))


def test_truncated_anywhere_is_an_error(valid):
    for cut in range(0, len(valid), 7):
        with pytest.raises(BitstreamError, match="truncated|incomplete"):
            read_ecdc(io.BytesIO(valid[:cut]))
    assert read_ecdc(io.BytesIO(valid)).frame_lengths.tolist() == [29]


def test_huge_declared_length_allocates_nothing(valid):
    """A header declaring 24 h of audio with a few bytes of data fails at the end of the data."""
    import tracemalloc

    data = with_meta({**GOOD, "al": 86400 * 24000, "nc": 32})
    tracemalloc.start()
    with pytest.raises(BitstreamError, match="truncated"):
        read_ecdc(io.BytesIO(data))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20


def test_file_from_another_model(valid, codecs):
    with pytest.raises(BitstreamError, match="made by encodec_24khz; the model given is encodec_48khz"):
        decompress(valid, codecs["48"])
    assert issubclass(BitstreamError, CodesError) and issubclass(BitstreamError, RvqkitError)


def test_lm_file_needs_the_right_lm(codecs, lms, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("RVQKIT_LM_DIR", raising=False)
    codec = codecs["24"]
    data = compress(codec, signal("24")[:, :6000], codec.sample_rate, BANDWIDTH, use_lm=True, lm=lms["24"][1])
    with pytest.raises(WeightsError, match="lm=PATH"):
        decompress(data, codec)
    with pytest.raises(BitstreamError, match="another model"):
        read_ecdc(io.BytesIO(data), lm=load_lm(lms["48"][1]))
    # Found by name in $RVQKIT_LM_DIR.
    monkeypatch.setenv("RVQKIT_LM_DIR", str(lms["24"][1].parent))
    audio, _ = decompress(data, codec)
    assert audio.shape == (1, 6000)


def test_codes_error_not_traceback_for_corrupt_lm_stream(codecs, lms):
    """A corrupt LM-coded stream gives a BitstreamError or valid codes, never another exception.

    Which flipped bytes become undecodable depends on the float rounding of the random-weight LM (it
    differs between CPU families), so the flips only assert "an rvqkit error or codes of the declared
    shape". Failure itself is checked on streams that must fail for any rounding: the entropy-coded
    payload cut short (arithmetic decoding needs its first bytes to start)."""
    codec = codecs["24"]
    lm = load_lm(lms["24"][1])
    enc = codec.encode(signal("24")[:, :6000], codec.sample_rate, bandwidth=BANDWIDTH)
    fo = io.BytesIO()
    write_ecdc(fo, enc, lm=lm)
    data = fo.getvalue()
    _, header = read_header(io.BytesIO(data))
    for i in range(70, len(data), 13):
        bad = bytearray(data)
        bad[i] ^= 0xFF
        try:
            out = read_ecdc(io.BytesIO(bytes(bad)), lm=lm)
        except BitstreamError:
            continue
        assert out.codes.shape[:2] == enc.codes.shape[:2]
        assert int(out.codes.min()) >= 0 and int(out.codes.max()) < codec.codebook_size
    for keep in (0, 1):
        with pytest.raises(BitstreamError):
            read_ecdc(io.BytesIO(data[: len(header) + keep]), lm=lm)


# -- CLI -------------------------------------------------------------------------------------------------
def test_cli_compress_decompress(meta_24k, lms, tmp_path, codecs):
    import soundfile as sf

    from rvqkit.cli import app, load_commands

    load_commands()
    runner = CliRunner()
    wav = tmp_path / "in.wav"
    x = signal("24")
    sf.write(wav, x[0], 24000)
    out = tmp_path / "out.ecdc"
    model = str(meta_24k[1])
    r = runner.invoke(app, ["compress", str(wav), str(out), "--bandwidth", "6", "--model", model])
    assert r.exit_code == 0, r.output
    lm_out = tmp_path / "lm.ecdc"
    lm_args = ["--lm-model", str(lms["24"][1]), "--threads", "1"]
    args = ["compress", str(wav), str(lm_out), "-b", "6", "--lm", "--model", model, *lm_args]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    dec = tmp_path / "dec.wav"
    r = runner.invoke(app, ["decompress", str(lm_out), str(dec), "--model", model, *lm_args])
    assert r.exit_code == 0, r.output
    audio, sr = sf.read(dec, dtype="float32")
    expect, _ = decompress(out.read_bytes(), codecs["24"])
    assert sr == 24000 and np.abs(audio - expect[0].numpy()).max() < 1e-3  # 16-bit WAV or float
    # Existing output is kept; a bad file is one line, exit 1.
    r = runner.invoke(app, ["decompress", str(out), str(dec), "--model", model])
    assert r.exit_code == 1 and "exists" in r.output
    junk = tmp_path / "junk.ecdc"
    junk.write_bytes(b"ECDC\x07" + b"\x00" * 20)
    r = runner.invoke(app, ["decompress", str(junk), str(tmp_path / "j.wav"), "--model", model])
    assert r.exit_code == 1 and "version 7 is not supported" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["decompress", str(lm_out), str(tmp_path / "n.wav"), "--model", model])
    assert r.exit_code == 1 and "--lm-model" in r.output


def test_cli_compress_failing_mid_write_keeps_the_old_file(meta_24k, tmp_path, monkeypatch):
    """The .ecdc is written to a temporary file and renamed: a write that fails halfway leaves the
    existing output as it was (with --overwrite) and no temporary file."""
    import soundfile as sf

    import rvqkit.compress
    from rvqkit.cli import app, load_commands

    load_commands()
    wav = tmp_path / "in.wav"
    sf.write(wav, signal("24")[0], 24000)
    out = tmp_path / "out.ecdc"
    out.write_bytes(b"previous")

    def failing(f, *args, **kwargs):  # compress writes block by block through compress_file
        f.write(b"ECDC half a file")
        raise OSError("disk full")

    monkeypatch.setattr(rvqkit.compress, "compress_file", failing)
    args = ["compress", str(wav), str(out), "-b", "6", "--model", str(meta_24k[1]), "--overwrite"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code != 0 and "disk full" in r.output and "Traceback" not in r.output
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.ecdc"]


def test_torch_threads_sets_and_restores(codecs, valid):
    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2
        audio, _ = decompress(valid, codecs["24"], threads=1)  # LM-free file: threads not touched
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"), torch_threads(0):
        pass
    assert audio.shape == (1, 9000)
