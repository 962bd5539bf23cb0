"""The Ray engine on a local Ray instance writes the same Parquet content as the local engine."""

from __future__ import annotations

import json

import pytest
from corpus_helpers import read_output, write_bad_items, write_clips

from rvqkit import Codec
from rvqkit.corpus import encode_corpus

ray = pytest.importorskip("ray", reason="the Ray engine needs ray (pip install 'rvqkit[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_engine_equals_local_engine(local_ray, hf_24k, tmp_path):
    folder = tmp_path / "audio"
    write_clips(folder, 5, seed=7)
    bad = write_bad_items(folder / "bad")
    codec = Codec.from_pretrained(hf_24k[1])
    common = dict(shard_size=3, max_duration=1.5)
    # Ray's CPU actors run one torch thread each; so does the local run (other thread counts may flip
    # rare near-ties of the codes)
    local = encode_corpus(folder, tmp_path / "local", codec, 6.0, workers=0, threads=1, **common)
    # the actors load the weights themselves from the model folder
    remote = encode_corpus(folder, tmp_path / "ray", hf_24k[1], 6.0, engine="ray", num_actors=2, **common)
    assert remote.shards_written == local.shards_written == 4
    got, want = read_output(tmp_path / "ray"), read_output(tmp_path / "local")
    assert got.num_rows == 5
    assert got.drop(["path"]).equals(want.drop(["path"]))
    assert got["path"].equals(want["path"])
    errors = [json.loads(x) for x in (tmp_path / "ray" / "errors.jsonl").read_text().splitlines()]
    assert {e["id"]: e["reason"] for e in errors} == bad
    assert (tmp_path / "ray" / "errors.jsonl").read_text() == (
        tmp_path / "local" / "errors.jsonl"
    ).read_text()
    for name in ("local", "ray"):
        m = json.loads((tmp_path / name / "manifest.json").read_text())
        assert m["counts"]["rows"] == 5 and m["status"] == "complete"
