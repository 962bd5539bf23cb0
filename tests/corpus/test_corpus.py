"""Corpus encoding to sharded Parquet: rows equal encoding each item alone, bad items listed not fatal,
every source kind, readers (datasets, pandas, polars), a real kill -9 and resume, decode back."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from conftest import make_signal
from corpus_helpers import one_thread, read_output, write_bad_items, write_clips  # noqa: F401 (one_thread: autouse fixture)

from rvqkit import AudioError, Codec
from rvqkit.corpus import CorpusError, decode_corpus, encode_corpus, encode_dataset, open_source
from rvqkit.corpus.encoding import CPU_LSTM_BATCH, plan_batches

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def codec24(hf_24k):
    return Codec.from_pretrained(hf_24k[1])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    clips = write_clips(root, 6)
    bad = write_bad_items(root / "bad")
    return root, clips, bad


@pytest.fixture(scope="module")
def encoded(corpus, codec24, tmp_path_factory):
    """The corpus encoded once (max 1.5 s, small batches and windows; decoding worker processes are
    exercised by the kill test)."""
    root, _, _ = corpus
    out = tmp_path_factory.mktemp("enc") / "out"
    summary = encode_corpus(
        root, out, codec24, 6.0, shard_size=3, workers=0, window=4, batch_seconds=0.5,
        max_duration=1.5, model_source="test-model",
    )  # fmt: skip
    return out, summary


def alone(codec: Codec, path: Path, bandwidth: float = 6.0, lstm_batch: int = CPU_LSTM_BATCH):
    """The item encoded alone, with the corpus's LSTM setting (its default unless given)."""
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return codec.encode(x.T, sr, bandwidth=bandwidth, lstm_batch=lstm_batch)


def test_rows_equal_encoding_each_item_alone(corpus, encoded, codec24):
    root, clips, bad = corpus
    out, summary = encoded
    table = read_output(out)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert len(rows) == len(clips)
    for path in clips:
        rid = path.relative_to(root).with_suffix("").as_posix()
        row = rows[rid]
        enc = alone(codec24, path)
        codes = np.asarray(row["codes"])
        assert codes.dtype == np.int64 and codes.shape == (8, row["num_frames"])
        assert np.array_equal(codes, enc.codes[0, :, : int(enc.frame_lengths[0])].numpy()), rid
        info = sf.info(path)
        assert (row["sample_rate"], row["channels"], row["num_samples"]) == (
            info.samplerate,
            info.channels,
            info.frames,
        )
        assert row["duration"] == pytest.approx(info.frames / info.samplerate)
        assert row["model_samples"] == int(enc.lengths[0])
        assert row["path"] == str(path)
    assert "scales" not in table.column_names  # 24 kHz model
    assert (
        pq.read_schema(next((out / "data").glob("*.parquet"))).field("codes").type.value_type.value_type
        == "int16"
    )
    # shards hold source-order ranges of shard_size items
    index = table["index"].to_pylist()
    assert index == sorted(index)
    assert summary.shards_written == summary.manifest["num_shards"] == 4  # 11 items / 3


def test_equal_length_items_share_a_call_and_batches_do_not_change_codes(corpus, codec24):
    _, clips, _ = corpus
    from rvqkit.corpus.encoding import encode_loaded
    from rvqkit.corpus.loading import LoadSpec, load_item

    spec = LoadSpec(24000, 1)
    loaded = [load_item(i, str(p), spec) for i, p in enumerate(clips)]
    assert loaded[0].audio.shape == loaded[1].audio.shape  # same length: one model call
    one = encode_loaded(codec24, loaded, 6.0, max_samples=10**9)  # everything in one batch
    each = encode_loaded(codec24, loaded, 6.0, max_samples=1)  # one item per batch
    for a, b in zip(one, each, strict=True):
        assert np.array_equal(a.codes, b.codes)


def test_plan_batches_sorts_and_bounds():
    batches = plan_batches([50, 10, 30, 10, 200], max_samples=60)
    assert batches == [[1, 3, 2], [0], [4]]
    assert sorted(i for b in batches for i in b) == list(range(5))


def test_bad_items_are_listed_and_counted(corpus, encoded):
    _, _, bad = corpus
    out, summary = encoded
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert {e["id"]: e["reason"] for e in errors} == bad
    assert all(e["message"] for e in errors)
    counts = summary.manifest["counts"]
    assert counts["errors"] == len(bad) and counts["rows"] == 6 and counts["items"] == 11
    assert counts["errors_by_reason"] == {r: 1 for r in bad.values()}


def test_manifest_json(encoded, codec24):
    out, _ = encoded
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete"
    assert m["model"]["weights_sha256"] == codec24.weights_sha256
    assert (m["bandwidth"], m["n_q"], m["model"]["name"]) == (6.0, 8, "encodec_24khz")
    assert m["rvqkit_version"] and m["model_source"] == "test-model"
    assert m["counts"]["frames"] == sum(read_output(out)["num_frames"].to_pylist())
    assert sorted(m["files"]) == sorted(f"data/{p.name}" for p in (out / "data").glob("*.parquet"))


def test_readable_by_datasets_pandas_polars(encoded):
    out, _ = encoded
    import datasets
    import pandas as pd
    import polars as pl

    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    df = pd.read_parquet(out / "data")
    pf = pl.read_parquet(out / "data" / "*.parquet")
    assert len(ds) == len(df) == pf.height == 6
    row = ds.sort("index")[0]
    first = df.sort_values("index").iloc[0]
    assert np.array_equal(np.asarray(row["codes"]), np.stack(first["codes"]))
    assert pf.sort("index")["codes"][0].to_list() == row["codes"]


def test_manifest_sources_carry_columns(corpus, codec24, tmp_path):
    root, clips, _ = corpus
    rows = [
        {"path": str(clips[0].relative_to(root)), "id": "a", "text": "hello", "speaker": "s1"},
        {"path": str(clips[3]), "id": "b", "text": "world"},
    ]
    jsonl = root / "manifest.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv_path = root / "manifest.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "id", "text", "speaker"])
        w.writeheader()
        w.writerows(rows)
    for manifest in (jsonl, csv_path):
        out = tmp_path / manifest.suffix[1:]
        encode_corpus(manifest, out, codec24, 3.0, workers=0)
        t = read_output(out).to_pylist()
        assert [r["id"] for r in t] == ["a", "b"]
        assert [r["text"] for r in t] == ["hello", "world"]
        assert t[0]["speaker"] == "s1" and t[1]["speaker"] in (None, "")
        assert np.asarray(t[1]["codes"]).shape[0] == 4  # 3 kbps
        enc = alone(codec24, clips[3], 3.0)
        assert np.array_equal(np.asarray(t[1]["codes"]), enc.codes[0].numpy())
    nopath = root / "nopath.jsonl"
    nopath.write_text(json.dumps({"file": "x.wav"}) + "\n")
    with pytest.raises(CorpusError, match="'path' column"):
        open_source(nopath)
    dup = root / "dup.jsonl"
    dup.write_text("".join(json.dumps({"path": str(clips[0]), "id": "x"}) + "\n" for _ in range(2)))
    with pytest.raises(CorpusError, match="appears twice"):
        open_source(dup)


def _audio_dataset(clips: list[Path]):
    import datasets

    ds = datasets.Dataset.from_dict(
        {
            "audio": [{"bytes": p.read_bytes(), "path": p.name} for p in clips],
            "id": [f"utt{i}" for i in range(len(clips))],
            "text": [f"text {i}" for i in range(len(clips))],
        }
    )
    return ds.cast_column("audio", datasets.Audio())


def test_datasets_sources_and_map_api(corpus, codec24, tmp_path):
    _, clips, _ = corpus
    ds = _audio_dataset(clips[:3])
    ds.save_to_disk(tmp_path / "saved")
    ds.to_parquet(tmp_path / "parquet" / "train.parquet")
    outs = []
    for src in (tmp_path / "saved", tmp_path / "parquet"):
        out = tmp_path / f"out_{src.name}"
        encode_corpus(src, out, codec24, 6.0, workers=0)
        outs.append(read_output(out))
        assert outs[-1]["id"].to_pylist() == ["utt0", "utt1", "utt2"]
        assert outs[-1]["text"].to_pylist() == ["text 0", "text 1", "text 2"]
    assert outs[0]["codes"].equals(outs[1]["codes"])
    with pytest.raises(CorpusError, match="lstm_batch must be at least 1"):
        encode_dataset(ds, codec24, 6.0, lstm_batch=0)
    mapped = encode_dataset(ds, codec24, 6.0, batch_size=2)
    assert mapped.features["audio"] == ds.features["audio"]  # audio column kept as it was
    assert str(mapped.features["codes"].feature.feature.dtype) == "int16"
    codes = mapped.select_columns(["codes", "num_frames"])  # reading "audio" rows would need torchcodec
    for i, p in enumerate(clips[:3]):
        enc = alone(codec24, p)
        assert np.array_equal(np.asarray(codes[i]["codes"]), enc.codes[0].numpy())
        assert codes[i]["codes"] == outs[0]["codes"][i].as_py()
        assert codes[i]["num_frames"] == int(enc.frame_lengths[0])
    import datasets

    broken = datasets.Dataset.from_dict({"audio": [{"bytes": b"not audio", "path": "x.wav"}]})
    with pytest.raises(AudioError, match="row 0: unreadable"):
        encode_dataset(broken.cast_column("audio", datasets.Audio()), codec24, 6.0)


def random_48k_codec() -> Codec:
    """rvqkit's own 48 kHz model with random weights and fitted codebooks (faster than the references)."""
    from rvqkit import ENCODEC_48KHZ
    from rvqkit.model import EncodecModel

    torch.manual_seed(48)
    model = EncodecModel(ENCODEC_48KHZ).eval()
    with torch.no_grad():  # codebooks 0-3 from residual frames of 0.3 s of signal, as conftest does
        x = torch.from_numpy(make_signal(14400, 2, 48000, seed=1))[None]
        residual = model.encoder(x / x.pow(2).mean().sqrt())[0].t()
        for book in model.quantizer.codebooks[:4]:
            book.copy_(residual[torch.randint(0, len(residual), (len(book),))])
            book.add_(torch.randn_like(book) * residual.std() * 0.1)
            residual = residual - book[torch.cdist(residual, book).argmin(dim=1)]
    return Codec(model)


def test_48khz_scales_and_segments(tmp_path, monkeypatch):
    codec = random_48k_codec()
    folder = tmp_path / "audio48"
    folder.mkdir()
    lengths = (0.2, 1.01, 1.5)  # 1, 2 and 2 segments; items 1 and 2 both have a full 1 s segment
    for i, s in enumerate(lengths):
        sf.write(folder / f"c{i}.wav", make_signal(int(44100 * s), 2, 44100, seed=i).T, 44100)
    calls = []
    lstm = codec.model.encoder.split_at_lstm()[1]
    run_lstm = lstm.forward
    monkeypatch.setattr(lstm, "forward", lambda x, *a: calls.append(x.shape[0]) or run_lstm(x, *a))
    out = tmp_path / "out48"
    encode_corpus(folder, out, codec, 6.0, workers=0)
    # On CPU through the engine (8 slots): the two full 1 s segments (items 1 and 2) share one call, each
    # final feed (item 0's only segment, the partial last segments) runs alone; every call has at least
    # two rows (a lone row is repeated), the LSTM's batch-invariant arithmetic.
    assert sorted(calls) == [2, 2, 2, 2]
    rows = read_output(out).to_pylist()
    monkeypatch.undo()
    for i, row in enumerate(rows):
        enc = alone(codec, folder / f"c{i}.wav")
        assert np.array_equal(np.asarray(row["codes"]), enc.codes[0, :, : int(enc.frame_lengths[0])].numpy())
        n_seg = 1 if i == 0 else 2
        assert len(row["scales"]) == n_seg
        assert np.array_equal(np.asarray(row["scales"], dtype=np.float32), enc.scales[0, :n_seg].numpy())
        assert len(np.unique(row["codes"])) > 10  # a meaningful comparison
    # and back to audio through the scales
    [wav] = decode_corpus(out, tmp_path / "wav", codec, ids=["c2"])
    assert sf.info(wav).frames == rows[2]["model_samples"] and sf.info(wav).channels == 2


def test_lstm_batch_1_gives_codec_encode_codes(corpus, codec24, tmp_path):
    """--lstm-batch 1: every item through the network alone, batch of one, exactly as `Codec.encode`."""
    root, clips, _ = corpus
    out = tmp_path / "out1"
    s = encode_corpus(root / "speaker_a", out, codec24, 6.0, workers=0, lstm_batch=1)
    assert s.manifest["lstm_batched"] is False
    rows = read_output(out).to_pylist()
    assert rows
    for row in rows:
        enc = alone(codec24, Path(row["path"]), lstm_batch=1)
        assert np.array_equal(np.asarray(row["codes"]), enc.codes[0].numpy())
    with pytest.raises(CorpusError, match="lstm_batch must be at least 1"):
        encode_corpus(root / "speaker_a", tmp_path / "o0", codec24, 6.0, lstm_batch=0)


def test_rerun_is_idempotent_and_refuses_other_settings(corpus, codec24, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "out"
    first = encode_corpus(root / "speaker_a", out, codec24, 6.0, workers=0, shard_size=2)
    before = read_output(out)
    again = encode_corpus(root / "speaker_a", out, codec24, 6.0, workers=0, shard_size=2)
    assert again.shards_written == 0 and again.shards_resumed == first.shards_written
    assert read_output(out).equals(before)
    with pytest.raises(CorpusError, match="bandwidth"):
        encode_corpus(root / "speaker_a", out, codec24, 3.0, workers=0, shard_size=2)
    assert first.manifest["lstm_batched"] is True  # the LSTM's arithmetic decides the codes' near-ties
    with pytest.raises(CorpusError, match="lstm_batched"):
        encode_corpus(root / "speaker_a", out, codec24, 6.0, workers=0, shard_size=2, lstm_batch=1)
    # a folder written before the option existed (no key) was encoded as --lstm-batch 1 and says so
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["lstm_batched"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorpusError, match=r"encoded with lstm_batch=1\)"):
        encode_corpus(root / "speaker_a", out, codec24, 6.0, workers=0, shard_size=2)
    manifest["lstm_batched"] = True
    (out / "manifest.json").write_text(json.dumps(manifest))
    # any batch of 2 or more gives the same codes: such a setting resumes
    again = encode_corpus(root / "speaker_a", out, codec24, 6.0, workers=0, shard_size=2, lstm_batch=3)
    assert again.shards_written == 0
    s = encode_corpus(root / "speaker_a", out, codec24, 3.0, workers=0, overwrite=True)
    assert s.manifest["n_q"] == 4 and len(list((out / "data").glob("*.parquet"))) == 1
    sf.write(root / "speaker_a" / "new.wav", make_signal(8000, 1, 16000).T, 16000)
    try:  # a file the job did not list: resuming would mix two corpora
        with pytest.raises(CorpusError, match="1 audio file that this job did not list"):
            encode_corpus(root / "speaker_a", out, codec24, 3.0, workers=0)
    finally:
        (root / "speaker_a" / "new.wav").unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not empty"):
        encode_corpus(root / "speaker_a", other, codec24, 6.0, workers=0)


def run_cli(*args: object, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rvqkit", *map(str, args)], capture_output=True, text=True, **kw
    )


def test_kill_9_then_rerun_gives_the_uninterrupted_rows(hf_24k, codec24, tmp_path):
    """A real kill -9 of the CLI mid-run, then the same command again: exactly the rows of a run
    that was never interrupted (no duplicates, none missing)."""
    folder = tmp_path / "audio"
    write_clips(folder, 14, seed=50, min_s=0.2, step_s=0.04)
    reference = tmp_path / "reference"
    # one torch thread in both runs: other thread counts may flip rare near-ties of the codes
    encode_corpus(folder, reference, codec24, 6.0, shard_size=2, window=2, workers=0, threads=1)

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rvqkit", "corpus", "encode", folder, out, "-m", hf_24k[1]]
    cmd += ["--shard-size", "2", "--window", "2", "--workers", "1", "--threads", "1", "--quiet"]
    proc = subprocess.Popen(list(map(str, cmd)), stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while not list((out / "records").glob("shard-*.json")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no shard appeared"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        # the worker exits by itself when its parent dies; do not leave it to chance in a test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = len(list((out / "records").glob("shard-*.json")))
    assert 1 <= done_at_kill < 7, "the run was not interrupted mid-way"
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"

    res = run_cli(*cmd[3:])
    assert res.returncode == 0, res.stderr
    assert f"{done_at_kill} already done" in res.stderr
    got, want = read_output(out), read_output(reference)
    assert got.num_rows == want.num_rows == 14
    assert got["id"].to_pylist() == want["id"].to_pylist()  # no duplicates, none missing
    assert got.drop(["path"]).equals(want.drop(["path"]))
    assert not list(out.rglob("*.tmp-*"))
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(
        p.name for p in (reference / "data").iterdir()
    )


def test_cli_decode_by_id(encoded, codec24, tmp_path, hf_24k):
    out, _ = encoded
    table = read_output(out)
    rid = table["id"][1].as_py()
    res = run_cli("corpus", "decode", out, tmp_path / "wav", "--id", rid, "-m", hf_24k[1])
    assert res.returncode == 0, res.stderr
    wav = tmp_path / "wav" / f"{rid}.wav"
    audio, sr = sf.read(wav, dtype="float32")
    row = table.slice(1, 1).to_pylist()[0]
    assert sr == 24000 and audio.shape == (row["model_samples"],)
    # a single shard (the one holding the row) finds the manifest two levels up
    [shard] = [f for f in (out / "data").glob("*.parquet") if rid in pq.read_table(f)["id"].to_pylist()]
    ref = decode_corpus(shard, tmp_path / "api", codec24, ids=[rid])
    assert ref == [tmp_path / "api" / f"{rid}.wav"]
    # another process, another torch thread count: equal up to float rounding and the 16-bit WAV step
    assert np.abs(audio - sf.read(ref[0], dtype="float32")[0]).max() <= 2 / 32768
    with pytest.raises(CorpusError, match="overwrite=True"):
        decode_corpus(out, tmp_path / "wav", codec24, ids=[rid])
    with pytest.raises(CorpusError, match="no rows with id nope"):
        decode_corpus(out, tmp_path / "wav2", codec24, ids=["nope"])


def test_cli_bad_source_is_one_line(tmp_path, hf_24k):
    res = run_cli("corpus", "encode", tmp_path / "missing", tmp_path / "out", "-m", hf_24k[1])
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "no such file or folder" in res.stderr


def test_decoded_audio_matches_codec_decode(encoded, codec24, tmp_path):
    out, _ = encoded
    row = read_output(out).slice(0, 1).to_pylist()[0]
    [path] = decode_corpus(out, tmp_path, codec24, ids=[row["id"]])
    from rvqkit import Encoded

    enc = Encoded(
        codes=torch.tensor(np.asarray(row["codes"]))[None],
        scales=None,
        lengths=torch.tensor([row["model_samples"]]),
        frame_lengths=torch.tensor([row["num_frames"]]),
        sample_rate=24000,
        channels=1,
        bandwidth=6.0,
        model="encodec_24khz",
    )
    ref = np.clip(codec24.decode(enc)[0, 0].numpy(), -1, 1)
    got = sf.read(path, dtype="float32")[0]
    assert np.abs(got - ref).max() < 2 / 32768  # 16-bit WAV


def test_token_columns_beside_and_instead_of_codes(corpus, encoded, codec24, tmp_path):
    from rvqkit.tokens import TokenLayout

    root, _, _ = corpus
    both = tmp_path / "both"
    encode_corpus(
        root / "speaker_a", both, codec24, 6.0, workers=0,
        tokens=["flatten", "delay"], token_offset=100, token_begin=True,
    )  # fmt: skip
    rows = read_output(both).to_pylist()
    m = json.loads((both / "manifest.json").read_text())
    assert [t["column"] for t in m["tokens"]] == ["tokens_flatten", "tokens_delay"]
    for spec in m["tokens"]:
        layout = TokenLayout.from_settings(spec["settings"])
        assert layout.vocab.offset == 100 and layout.vocab.begin is not None
        for row in rows:
            want = layout.encode(np.asarray(row["codes"])).items()[0]
            assert np.array_equal(np.asarray(row[spec["column"]]), want.numpy())
    assert np.asarray(rows[0]["tokens_delay"]).shape == (8, rows[0]["num_frames"] + 7 + 1)

    only = tmp_path / "only"
    encode_corpus(root / "speaker_a", only, codec24, 6.0, workers=0, tokens=["delay"], codes=False)
    table = read_output(only)
    assert "codes" not in table.column_names and "tokens_delay" in table.column_names
    rid = rows[1]["id"]
    [from_tokens] = decode_corpus(only, tmp_path / "a", codec24, ids=[rid])
    [from_codes] = decode_corpus(both, tmp_path / "b", codec24, ids=[rid])
    assert np.array_equal(sf.read(from_tokens)[0], sf.read(from_codes)[0])
    with pytest.raises(CorpusError, match="at least one token layout"):
        encode_corpus(root / "speaker_a", tmp_path / "none", codec24, 6.0, codes=False)
    with pytest.raises(CorpusError, match="unknown token layout"):
        encode_corpus(root / "speaker_a", tmp_path / "none", codec24, 6.0, tokens=["zigzag"])
