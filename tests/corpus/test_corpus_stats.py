"""`rvqkit corpus stats`: every figure recomputed here from the rows themselves."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from corpus_helpers import read_output, write_bad_items, write_clips

from rvqkit import Codec
from rvqkit.corpus import CorpusError, encode_corpus
from rvqkit.corpus.stats import corpus_stats, entropy_bits
from rvqkit.tokens import LAYOUTS, TokenLayout

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def job(hf_24k, tmp_path_factory):
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("stats")
        write_clips(root / "audio", 7, seed=11)
        write_bad_items(root / "audio" / "bad")
        codec = Codec.from_pretrained(hf_24k[1])
        out = root / "out"
        encode_corpus(
            root / "audio", out, codec, 3.0, workers=0, shard_size=3, max_duration=1.5,
            tokens=["delay"], token_begin=True,
        )  # fmt: skip
        tokens_only = root / "tokens_only"
        encode_corpus(
            root / "audio", tokens_only, codec, 3.0, workers=0, shard_size=3, max_duration=1.5,
            tokens=["flatten"], codes=False,
        )  # fmt: skip
    finally:
        torch.set_num_threads(saved)
    return out, tokens_only


def test_stats_equal_the_rows(job):
    out, _ = job
    st = corpus_stats(out, batch_rows=2)  # several batches per shard
    rows = read_output(out).to_pylist()
    manifest = json.loads((out / "manifest.json").read_text())
    assert (st.items, st.rows, st.errors) == (12, 7, 5)
    assert st.errors_by_reason == manifest["counts"]["errors_by_reason"]
    assert st.audio_seconds == pytest.approx(sum(r["duration"] for r in rows))
    assert st.hours == pytest.approx(st.audio_seconds / 3600)
    assert st.frames == sum(r["num_frames"] for r in rows) == manifest["counts"]["frames"]
    assert (st.n_q, st.codebook_size, st.status) == (4, 1024, "complete")
    want = np.zeros((4, 1024), dtype=np.int64)
    for r in rows:
        for k, codes in enumerate(r["codes"]):
            want[k] += np.bincount(codes, minlength=1024)
    assert np.array_equal(st.histogram, want)
    for k, b in enumerate(st.codebooks):
        p = want[k][want[k] > 0] / want[k].sum()
        assert b.distinct == (want[k] > 0).sum() > 1
        assert b.entropy_bits == pytest.approx(-(p * np.log2(p)).sum())
        assert b.perplexity == pytest.approx(2**b.entropy_bits) and 1 < b.perplexity <= b.distinct
    # tokens per second: summed from each row's real token length
    rates = {r.layout: r for r in st.layouts}
    assert set(rates) == set(LAYOUTS)
    delay = TokenLayout.from_settings(manifest["tokens"][0]["settings"])
    assert rates["delay"].settings == "as written" and rates["flatten"].settings == "default"
    steps = sum(len(r["tokens_delay"][0]) for r in rows)
    assert rates["delay"].positions_per_second == pytest.approx(steps / st.audio_seconds)
    assert rates["delay"].tokens_per_second == pytest.approx(4 * steps / st.audio_seconds)
    assert steps == sum(delay.length(r["num_frames"]) for r in rows)
    flat = TokenLayout("flatten", 4, 1024)
    assert rates["flatten"].positions_per_second == pytest.approx(
        sum(flat.length(r["num_frames"]) for r in rows) / st.audio_seconds
    )
    assert rates["flatten"].tokens_per_second == rates["flatten"].positions_per_second
    assert rates["parallel"].streams == 4


def test_tokens_only_corpus_gives_the_same_code_stats(job):
    out, tokens_only = job
    a, b = corpus_stats(out), corpus_stats(tokens_only)
    assert np.array_equal(a.histogram, b.histogram) and a.codebooks == b.codebooks


def test_entropy_of_known_distributions():
    assert entropy_bits(np.array([5, 5, 5, 5])) == pytest.approx(2.0)
    assert entropy_bits(np.array([7, 0, 0])) == 0.0 and entropy_bits(np.zeros(3)) == 0.0


def test_running_job_counts_finished_shards(job, tmp_path):
    out, _ = job
    import shutil

    part = tmp_path / "part"
    shutil.copytree(out, part)
    manifest = json.loads((part / "manifest.json").read_text())
    manifest["status"] = "running"
    (part / "manifest.json").write_text(json.dumps(manifest))
    (part / "records" / "shard-00001.json").unlink()  # as if the job were still at it
    st = corpus_stats(part)
    assert st.status == "running" and st.shards_done == manifest["num_shards"] - 1
    assert st.items == 12 - 3
    with pytest.raises(CorpusError, match="no manifest.json"):
        corpus_stats(tmp_path)


def test_cli_stats_table_json_png(job, tmp_path):
    out, _ = job
    png = tmp_path / "stats.png"
    run = [sys.executable, "-m", "rvqkit", "corpus", "stats", str(out)]
    res = subprocess.run([*run, "--png", str(png)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for text in ("codebook use", "perplexity", "token layouts", "delay", "flatten", "0.00"):
        assert text in res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = subprocess.run([*run, "--png", str(png)], capture_output=True, text=True)
    assert again.returncode == 1 and "--overwrite" in again.stderr  # the PNG is not replaced unasked
    res = subprocess.run([*run, "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    st = corpus_stats(out)
    assert d["rows"] == st.rows and d["hours"] == pytest.approx(st.hours)
    assert [c["perplexity"] for c in d["codebooks"]] == pytest.approx([c.perplexity for c in st.codebooks])
    assert {x["layout"] for x in d["layouts"]} == set(LAYOUTS)
