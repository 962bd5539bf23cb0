"""Token layouts: exact round trips over random shapes and settings (hypothesis, fixed derandomized
budget), streaming equals offline, the delay layout against audiocraft's definition, and errors that
name the item and position of the first token that does not fit."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rvqkit import Codec, CodesError
from rvqkit.tokens import LAYOUTS, TokenError, TokenLayout

PROPERTY = settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def layouts(draw, layout=None) -> TokenLayout:
    name = draw(st.sampled_from(LAYOUTS)) if layout is None else layout
    n_q = draw(st.integers(1, 5))
    codebook_size = draw(st.sampled_from([1, 3, 16, 1024]))
    offset = draw(st.sampled_from([0, 7, 32000]))

    def special():  # none, next free id, or an id of the "text vocabulary" below the offset
        options = [st.just(False), st.just(True)]
        if offset:
            options.append(st.integers(0, offset - 1))
        return st.one_of(*options)

    begin, end = draw(special()), draw(special())
    delay_pad = None
    if name == "delay":
        delay_pad = draw(
            st.one_of(
                st.none(),
                st.just(begin) if begin is not False else st.none(),  # audiocraft: one id for both
                st.lists(st.integers(0, offset - 1), min_size=n_q, max_size=n_q) if offset else st.none(),
            )
        )
    return TokenLayout(
        name,
        n_q,
        codebook_size,
        offset,
        begin=begin,
        end=end,
        delay_pad=delay_pad,
        shift=draw(st.sampled_from([None, True, False])) if name in ("delay", "parallel") else None,
        padding_side=draw(st.sampled_from(["right", "left"])),
    )


@st.composite
def layouts_and_codes(draw, layout=None):
    lay = draw(layouts(layout))
    batch = draw(st.integers(1, 4))
    frames = draw(st.integers(0, 7))
    extra_q = draw(st.integers(0, 2))  # codes may hold more codebooks than the layout takes
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, lay.codebook_size, (batch, lay.n_q + extra_q, frames), generator=gen)
    lengths = torch.tensor(draw(st.lists(st.integers(0, frames), min_size=batch, max_size=batch)))
    return lay, codes, lengths


def assert_same_codes(codes, lengths, decoded, frame_lengths, n_q):
    assert torch.equal(frame_lengths, lengths)
    assert decoded.shape[:2] == (codes.shape[0], n_q)
    assert decoded.shape[-1] == (int(lengths.max()) if len(lengths) else 0)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(decoded[b, :, :n], codes[b, :n_q, :n])
        assert not decoded[b, :, n:].any()


@PROPERTY
@given(layouts_and_codes())
def test_round_trip_is_exact(case):
    lay, codes, lengths = case
    tb = lay.encode(codes, lengths)
    assert tb.ids.dtype == torch.long and tb.attention_mask.dtype == torch.bool
    want_shape = (codes.shape[0], lay.n_q) if lay.multi_stream else (codes.shape[0],)
    assert tb.ids.shape[:-1] == want_shape
    assert tb.lengths.tolist() == [lay.length(n) for n in lengths.tolist()]
    if tb.ids.numel():
        assert int(tb.ids.min()) >= 0 and int(tb.ids.max()) < lay.vocab_size
    steps = tb.ids.transpose(1, 2) if lay.multi_stream else tb.ids  # [batch, length(, n_q)]
    assert (steps[~tb.attention_mask] == lay.vocab.pad).all()
    for mask in (tb.attention_mask, None):  # with the mask, and finding the ends from the pad ids
        decoded, frame_lengths = lay.decode(tb.ids, mask)
        assert_same_codes(codes, lengths, decoded, frame_lengths, lay.n_q)
    # each item alone gives the same ids as inside the batch
    for b, item in enumerate(tb.items()):
        alone = lay.encode(codes[b : b + 1, :, : int(lengths[b])])
        assert torch.equal(alone.ids[0], item)


@PROPERTY
@given(layouts_and_codes())
def test_audio_ids_name_their_codebook(case):
    """Each code becomes an id in its codebook's range; for shifted layouts the ranges are disjoint."""
    lay, codes, lengths = case
    ids = lay.vocab.codes_to_ids(codes[:, : lay.n_q])
    for k in range(lay.n_q):
        lo, hi = lay.vocab.code_range(k)
        assert ((ids[:, k] >= lo) & (ids[:, k] < hi)).all()
    if lay.vocab.shift and lay.n_q > 1:
        assert lay.vocab.code_range(0)[1] <= lay.vocab.code_range(1)[0]
    specials = set(lay.vocab.specials().values())
    assert not specials & set(range(lay.vocab.offset, lay.vocab.audio_end))


@PROPERTY
@given(layouts_and_codes(), st.data())
def test_streaming_equals_offline(case, data):
    lay, codes, _ = case
    if lay.layout == "codebook":
        with pytest.raises(TokenError, match="cannot be streamed"):
            lay.streamer(codes.shape[0])
        return
    streamer = lay.streamer(codes.shape[0])
    chunks, t = [], 0
    while t < codes.shape[-1]:
        step = data.draw(st.integers(1, 3))
        frames = codes[..., t : t + step]
        chunks.append(streamer.push(frames[..., 0] if step == 1 and frames.shape[-1] == 1 else frames))
        t += step
    chunks.append(streamer.flush())
    assert torch.equal(torch.cat(chunks, dim=-1), lay.encode(codes).ids)
    with pytest.raises(TokenError, match="flushed"):
        streamer.push(codes[..., :1])


@PROPERTY
@given(layouts_and_codes(), st.data())
def test_corrupt_token_is_reported_at_its_position(case, data):
    lay, codes, lengths = case
    tb = lay.encode(codes, lengths)
    real = tb.attention_mask.nonzero()
    if not len(real):
        return
    b, p = (int(i) for i in real[data.draw(st.integers(0, len(real) - 1))])
    ids = tb.ids.clone()
    k = data.draw(st.integers(0, lay.n_q - 1)) if lay.multi_stream else None
    foreign = lay.vocab_size + data.draw(st.integers(0, 5))
    if k is None:
        ids[b, p] = foreign
    else:
        ids[b, k, p] = foreign
    with pytest.raises(TokenError) as err:
        lay.decode(ids, tb.attention_mask)
    assert (err.value.item, err.value.position, err.value.stream) == (b, p, k)
    assert f"item {b}" in str(err.value) and f"position {p}" in str(err.value)
    assert isinstance(err.value, CodesError)


@PROPERTY
@given(layouts_and_codes(layout="delay"))
def test_delay_matches_audiocraft_definition(case):
    """audiocraft's delayed pattern: one all-special first step, then step s holds c[k, s-1-k] in stream k
    where that frame exists, the special token elsewhere (slow reference written from the definition)."""
    lay0, codes, _ = case
    n_q, card = lay0.n_q, lay0.codebook_size
    lay = TokenLayout("delay", n_q, card, begin=card, delay_pad=card)
    c = codes[0, :n_q]
    frames = c.shape[-1]
    ref = torch.full((n_q, frames + n_q), card)
    for s in range(1, frames + n_q):
        for k in range(n_q):
            if 0 <= s - 1 - k < frames:
                ref[k, s] = c[k, s - 1 - k]
    assert torch.equal(lay.encode(c).ids[0], ref)


@PROPERTY
@given(layouts())
def test_settings_round_trip(lay):
    again = TokenLayout.from_settings(lay.settings())
    assert again == lay and again.vocab == lay.vocab and again.vocab_size == lay.vocab_size


# -- examples --------------------------------------------------------------------------------------------
def test_flatten_example_shifts_codebooks():
    codes = torch.tensor([[[5, 6], [7, 8]]])  # [1, 2 codebooks, 2 frames]
    lay = TokenLayout("flatten", n_q=2, offset=100, begin=True, end=True)
    tb = lay.encode(codes)
    a = 100 + 2 * 1024  # first id after the audio ids: pad, then begin, end
    assert tb.ids.tolist() == [[a + 1, 105, 1131, 106, 1132, a + 2]]
    assert lay.vocab_size == a + 3
    assert TokenLayout("codebook", n_q=2).encode(codes).ids.tolist() == [[5, 6, 1031, 1032]]


def test_delay_example():
    codes = torch.arange(6).view(1, 2, 3)
    lay = TokenLayout("delay", n_q=2)  # pad 1024, delay pad 1025
    assert lay.encode(codes).ids.tolist() == [[[0, 1, 2, 1025], [1025, 3, 4, 5]]]


def test_fewer_codebooks_than_held_and_too_many():
    codes = torch.randint(0, 1024, (1, 8, 4))
    decoded, _ = TokenLayout("parallel", n_q=2).decode(TokenLayout("parallel", n_q=2).encode(codes).ids)
    assert torch.equal(decoded, codes[:, :2])
    with pytest.raises(TokenError, match="takes 9 codebooks, the codes hold 8"):
        TokenLayout("flatten", n_q=9).encode(codes)


def test_bad_codes_and_settings_are_clear():
    with pytest.raises(TokenError, match="item 1: code 1024 of codebook 0 at frame 2"):
        TokenLayout("flatten", n_q=1).encode(torch.tensor([[[0, 0, 0]], [[1, 1, 1024]]]))
    with pytest.raises(TokenError, match="must be integers"):
        TokenLayout().encode(torch.zeros(1, 8, 2))
    with pytest.raises(TokenError, match="inside the audio ids"):
        TokenLayout("flatten", n_q=2, begin=1500)
    with pytest.raises(TokenError, match="equals the pad id"):
        TokenLayout("flatten", n_q=2, begin=5000, pad=5000)
    with pytest.raises(TokenError, match="unknown token layout"):
        TokenLayout("zigzag")  # type: ignore[arg-type]
    with pytest.raises(TokenError, match="only used by the 'delay' layout"):
        TokenLayout("flatten", delay_pad=3000)


def test_decode_errors_name_position():
    lay = TokenLayout("flatten", n_q=4)
    ids = lay.encode(torch.randint(0, 1024, (1, 4, 3))).ids
    with pytest.raises(TokenError, match=r"item 0, position 8: 10 audio tokens are not whole frames"):
        lay.decode(ids[:, :10])
    delay = TokenLayout("delay", n_q=3)
    tb = delay.encode(torch.randint(0, 1024, (2, 3, 4)))
    broken = tb.ids.clone()
    broken[1, 2, 0] = 7  # stream 2 must wait two steps
    with pytest.raises(TokenError, match=r"item 1, stream 2, position 0: broken delay pattern"):
        delay.decode(broken)
    pad_inside = tb.ids.clone()
    pad_inside[0, 0, 1] = delay.vocab.pad
    with pytest.raises(TokenError, match=r"item 0, stream 0, position 1: pad \(id 1024\) where a code"):
        delay.decode(pad_inside)


def test_tokens_to_audio_equals_direct_decode(hf_24k):
    """codes → tokens → codes → audio gives the same audio as decoding the codes."""
    from conftest import make_signal

    _, folder = hf_24k
    codec = Codec.from_pretrained(folder)
    enc = codec.encode([make_signal(4000, 1, 24000), make_signal(2500, 1, 24000, seed=1)], 24000, 3.0)
    lay = TokenLayout("delay", n_q=enc.n_q, offset=50257, begin=True, end=True)
    tb = lay.encode(enc.codes, enc.frame_lengths)
    codes, frame_lengths = lay.decode(tb.ids, tb.attention_mask)
    assert torch.equal(frame_lengths, enc.frame_lengths)
    # shorthands: an Encoded in, a TokenBatch back
    assert torch.equal(lay.encode(enc).ids, tb.ids)
    assert all(torch.equal(a, b) for a, b in zip(lay.decode(tb), (codes, frame_lengths), strict=True))
    again = dataclasses.replace(enc, codes=codes)
    assert torch.equal(codec.decode(again), codec.decode(enc))
    # coarse decoding: the first k codebooks, from fewer tokens
    coarse = TokenLayout("flatten", n_q=1)
    c1, _ = coarse.decode(coarse.encode(enc.codes, enc.frame_lengths).ids)
    one = codec.decode(dataclasses.replace(enc, codes=c1))
    assert torch.equal(one, codec.decode(enc, n_q=1))
    assert not torch.equal(one, codec.decode(enc))


# -- command line ----------------------------------------------------------------------------------------
def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rvqkit", *map(str, args)], capture_output=True, text=True)


def test_cli_tokens_and_back_to_audio(hf_24k, tmp_path):
    from conftest import make_signal

    _, folder = hf_24k
    codec = Codec.from_pretrained(folder)
    enc = codec.encode(make_signal(6000, 1, 24000, seed=2), 24000, bandwidth=3.0)
    codes_file = tmp_path / "codes.npz"
    enc.save(codes_file)

    res = run_cli(
        "tokens", codes_file, "--layout", "flatten", "--n-q", "2", "--offset", "100", "--begin", "auto"
    )
    assert res.returncode == 0, res.stderr
    printed = [int(v) for v in res.stdout.split()]
    want = TokenLayout("flatten", 2, offset=100, begin=True).encode(enc.codes, enc.frame_lengths).ids[0]
    assert printed == want.tolist()
    assert "vocab size 2150" in res.stderr  # 100 + 2 x 1024 audio ids, then pad and begin

    tok = tmp_path / "tokens.json"
    res = run_cli("tokens", codes_file, "-l", "delay", "--end", "auto", "-o", tok)
    assert res.returncode == 0, res.stderr
    wav = tmp_path / "back.wav"
    res = run_cli("detokenize", tok, wav, "--model", folder)
    assert res.returncode == 0, res.stderr
    import soundfile as sf

    audio, sr = sf.read(wav, dtype="float32")
    direct = codec.decode(enc)[0, 0].numpy()
    assert sr == 24000 and audio.shape == direct.shape
    assert np.abs(audio - np.clip(direct, -1, 1)).max() <= 1 / 32768 + 1e-6  # 16-bit WAV rounding

    # a broken delay pattern is one line naming the position
    doc = json.loads(tok.read_text())
    doc["items"][0][2][1] = 5
    tok.write_text(json.dumps(doc))
    res = run_cli("detokenize", tok, tmp_path / "x.wav", "--model", folder)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "item 0, stream 2, position 1: broken delay pattern" in res.stderr
    res = run_cli("tokens", codes_file, "--n-q", "5")
    assert res.returncode == 1 and "takes 5 codebooks, the codes hold 4" in res.stderr


def test_docs_example_runs(hf_24k, tmp_path):
    """The Python examples of docs/tokens.md run as written (with a test model and file)."""
    import re
    from pathlib import Path

    import soundfile as sf
    from conftest import make_signal

    doc = Path(__file__).parents[2] / "docs" / "tokens.md"
    if not doc.exists():
        pytest.skip("docs/tokens.md is not in this checkout")
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    main = next(b for b in blocks if "speech.wav" in b)
    generated = next(b for b in blocks if "generated_ids" in b)
    wav = tmp_path / "speech.wav"
    sf.write(wav, make_signal(8000, 1, 16000, seed=4).T, 16000)
    code = main.replace('"facebook/encodec_24khz"', repr(str(hf_24k[1]))).replace(
        '"speech.wav"', repr(str(wav))
    )
    env: dict = {}
    exec(compile(code, str(doc), "exec"), env)
    assert torch.equal(env["audio_coarse"], env["codec"].decode(env["encoded"], n_q=2))
    env["generated_ids"] = env["batch"].ids
    exec(compile(generated, str(doc), "exec"), env)
    assert env["audio"].shape[-1] == int(env["frame_lengths"][0]) * 320


# -- token files: bounded reading and validation (issue 20) -------------------------------------------------
def _token_file_source(model: str = "encodec_24khz", lengths=(3200, 1000)):
    from rvqkit.config import PRESETS
    from rvqkit.encoded import Encoded
    from rvqkit.framing import frames_for_length, segment_count

    cfg = PRESETS[model]
    frames = [frames_for_length(cfg, n) for n in lengths]
    scales = torch.rand(len(lengths), segment_count(cfg, max(lengths))) + 0.1 if cfg.normalize else None
    return Encoded(
        torch.randint(0, 1024, (len(lengths), 2, max(frames))),
        scales,
        torch.tensor(lengths),
        torch.tensor(frames),
        cfg.sampling_rate,
        cfg.audio_channels,
        cfg.bandwidth_for_n_q(2),
        model,
    )


@pytest.mark.parametrize("suffix", [".npz", ".json"])
@pytest.mark.parametrize("layout", ["flatten", "delay"])
def test_token_file_round_trip(tmp_path, suffix, layout):
    from rvqkit.cli.tokens import load_tokens as cli_load_tokens  # the compatibility names
    from rvqkit.tokens import read_tokens, save_tokens

    enc = _token_file_source("encodec_48khz")
    lay = TokenLayout(layout, 2, begin=True)
    batch = lay.encode(enc)
    path = tmp_path / f"t{suffix}"
    save_tokens(path, lay, batch, enc)
    f = read_tokens(path)
    assert (
        f.layout == lay
        and torch.equal(f.ids, batch.ids)
        and torch.equal(f.attention_mask, batch.attention_mask)
    )
    assert torch.equal(f.lengths, enc.lengths) and torch.equal(f.frame_lengths, enc.frame_lengths)
    assert torch.allclose(f.scales, enc.scales) and f.source["model"] == "encodec_48khz"
    codes, frames = f.layout.decode(f.ids, f.attention_mask)
    assert torch.equal(frames, enc.frame_lengths) and torch.equal(codes, enc.codes * enc.mask()[:, None])
    assert cli_load_tokens(path)[0] == lay
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # written atomically, nothing left


def _npz_token_file(tmp_path, **change):
    from rvqkit.tokens.files import FORMAT

    enc = _token_file_source("encodec_48khz")
    lay = TokenLayout("flatten", 2)
    batch = lay.encode(enc)
    meta = {"format": FORMAT, "version": 1, "layout": lay.settings(), "source": {"model": enc.model}}
    arrays = {
        "ids": batch.ids.numpy(),
        "attention_mask": batch.attention_mask.numpy(),
        "lengths": enc.lengths.numpy(),
        "frame_lengths": enc.frame_lengths.numpy(),
        "scales": enc.scales.numpy(),
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    }
    arrays |= change
    path = tmp_path / "t.npz"
    np.savez(path, **arrays)
    return path, arrays


@pytest.mark.parametrize(
    "field, make, message",
    [
        ("ids", lambda a: a.astype(np.float32), "float32, which is not allowed"),
        ("ids", lambda a: a.astype(np.complex64), "not allowed"),
        ("ids", lambda a: a.astype(bool), "not allowed"),
        ("attention_mask", lambda a: a.astype(np.float32), "not allowed"),
        ("lengths", lambda a: a * 0, "positive"),
        ("lengths", lambda a: a * 10**9, "allowed"),
        ("scales", lambda a: np.where(a > 0, np.nan, a).astype(np.float32), "finite"),
        ("scales", lambda a: -a, "finite and not negative"),
        ("extra", lambda a: np.zeros(3), "unexpected member"),
    ],
)
def test_malformed_npz_token_files_refused(tmp_path, field, make, message):
    from rvqkit.tokens import read_tokens

    _, arrays = _npz_token_file(tmp_path)
    path, _ = _npz_token_file(tmp_path, **{field: make(arrays.get(field, np.zeros(1)))})
    with pytest.raises(TokenError, match=message):
        read_tokens(path)


def test_malformed_json_token_files_refused(tmp_path, monkeypatch):
    from rvqkit.tokens import files, read_tokens, save_tokens

    enc = _token_file_source()
    lay = TokenLayout("flatten", 2)
    path = tmp_path / "t.json"
    save_tokens(path, lay, lay.encode(enc), enc)
    good = json.loads(path.read_text())

    def refused(message, **change):
        doc = json.loads(json.dumps(good)) | change
        path.write_text(json.dumps(doc))
        with pytest.raises(TokenError, match=message):
            read_tokens(path)

    items = good["items"]
    refused("integers", items=[[*items[0][:-1], items[0][-1] + 0.5], items[1]])  # fractional id
    refused("integers", items=[[True, *items[0][1:]], items[1]])
    refused("integers", items=[[2**70, *items[0][1:]], items[1]])
    refused("integers", items=[["7", *items[0][1:]], items[1]])
    refused("must be", items=list(range(10)))  # a flat list where a list of lists is expected
    refused("lengths", lengths=[3200.5, 1000])
    refused("allowed", lengths=[10**12, 1000])
    refused("layout n_q", layout=good["layout"] | {"n_q": 10**9})
    refused("codebook_size", layout=good["layout"] | {"codebook_size": 2**40})
    refused("finite", scales=[[float("nan")], [1.0]])
    path.write_text("[" * 100_000)
    with pytest.raises(TokenError, match="not a readable token file"):
        read_tokens(path)
    monkeypatch.setattr(files, "MAX_JSON_BYTES", 100)
    path.write_text(json.dumps(good))
    with pytest.raises(TokenError, match="use .npz"):
        read_tokens(path)


def test_detokenize_refuses_huge_lengths_and_unknown_models_fast(tmp_path):
    """A 48 kHz token file declaring 10**12 samples, and one naming a model that is not a preset, fail
    with one line before any weights are looked up."""
    import time

    path, arrays = _npz_token_file(tmp_path)
    huge, _ = _npz_token_file(tmp_path, lengths=np.array([10**12, 1000]))
    t = time.perf_counter()
    res = run_cli("detokenize", huge, tmp_path / "o.wav")
    assert res.returncode == 1 and "allowed" in res.stderr and "Traceback" not in res.stderr, res.stderr
    from rvqkit.tokens.files import FORMAT

    meta = {"format": FORMAT, "version": 1, "layout": TokenLayout("flatten", 2).settings()}
    meta["source"] = {"model": "attacker/weights"}
    np.savez(path, **(arrays | {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}))
    res = run_cli("detokenize", path, tmp_path / "o.wav")
    assert res.returncode == 1 and "not a known preset" in res.stderr and "--model" in res.stderr
    assert not (tmp_path / "o.wav").exists()
    assert time.perf_counter() - t < 120  # two CLI starts; nothing is downloaded or decoded
