"""The Ray engine on a local Ray instance writes the same Parquet content as the local engine."""

from __future__ import annotations

import json

import pytest
from corpus_helpers import read_output, write_bad_items, write_clips
from mimi_helpers import SMALL as MIMI_SMALL
from snac_helpers import SMALL_PLAIN

from rvqkit import Codec
from rvqkit.corpus import encode_corpus
from rvqkit.families import load_family_model
from rvqkit.mimi import random_mimi, save_hf_folder
from rvqkit.snac import random_snac, save_snac, snac_state_dict

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


def test_ray_engine_with_mimi_and_snac_equals_local(local_ray, tmp_path):
    """Mimi (a folder) and SNAC (a loaded FamilyCodec: the actors load its source; its ragged levels
    travel packed) on Ray give the rows of the local engine."""
    folder = tmp_path / "audio"
    write_clips(folder, 4, seed=3, step_s=0.2)
    mimi = save_hf_folder(random_mimi(MIMI_SMALL, seed=3), tmp_path / "mimi")
    snac = save_snac(tmp_path / "snac", snac_state_dict(random_snac(SMALL_PLAIN, seed=2)), SMALL_PLAIN)
    for name, model, n_q in (("mimi", mimi, 3), ("snac", load_family_model(snac), None)):
        common = dict(shard_size=2, n_q=n_q)
        local = encode_corpus(folder, tmp_path / f"{name}_local", model, workers=0, threads=1, **common)
        remote = encode_corpus(folder, tmp_path / f"{name}_ray", model, engine="ray", num_actors=2, **common)
        assert remote.counts["rows"] == local.counts["rows"] == 4, name
        got, want = read_output(tmp_path / f"{name}_ray"), read_output(tmp_path / f"{name}_local")
        assert got.equals(want), name
        m = json.loads((tmp_path / f"{name}_ray" / "manifest.json").read_text())
        assert m["family"] == name
