"""The corpus job as typed data: settings checked field by field, the manifest it writes (equal to what
a run writes, and to what the code before CorpusJob wrote), and the resume comparison."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from corpus_helpers import one_thread, write_clips  # noqa: F401 (one_thread: autouse fixture)

from rvqkit import ENCODEC_24KHZ, Codec, __version__
from rvqkit.cli.messages import cli_message
from rvqkit.corpus import CorpusError, encode_corpus, open_source
from rvqkit.corpus.job import CorpusJob, JobSettings, ModelInfo, SourceInfo
from rvqkit.model import EncodecModel

pytest.importorskip("pyarrow")

#: keys the output folder adds to the job's own (status and what the run found)
RUN_KEYS = ("status", "counts", "files", "last_run_seconds")


@pytest.fixture(scope="module")
def codec():
    """A random-weight 24 kHz model: the job only needs its facts, and codes of any weights."""
    torch.manual_seed(0)
    return Codec(EncodecModel(ENCODEC_24KHZ).eval())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    write_clips(root, 3)
    return root


TOKENS = {
    "tokens": ("delay", "flatten"),
    "token_offset": 5,
    "token_begin": True,
    "token_end": 5000,
    "codes": False,
    "shard_size": 2,
    "first_shard_size": 1,
    "max_duration": 9.0,
    "lstm_batch": 1,
}


def job_of(codec, folder, old=None, **settings) -> CorpusJob:
    s = JobSettings(**settings)
    return CorpusJob.create(s, codec, codec.name, open_source(folder), s.token_specs(codec), old)


def job_part(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in RUN_KEYS}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("shard_size", 0, "shard_size must be at least 1, got 0"),
        ("window", 0, "window must be at least 1, got 0"),
        ("lstm_batch", -2, "lstm_batch must be at least 1, got -2"),
        ("first_shard_size", 0, "first_shard_size must be at least 1, got 0"),
        ("threads", 0, "threads must be at least 1, got 0"),
        ("max_duration", 0, "max_duration must be positive, got 0"),
        ("max_duration", -1.5, "max_duration must be positive, got -1.5"),
        ("engine", "spark", "unknown engine 'spark'; use 'local' or 'ray'"),
    ],
)
def test_settings_errors_name_the_field(field, value, message):
    with pytest.raises(CorpusError) as e:
        JobSettings(**{field: value})
    assert str(e.value) == message
    if field != "engine":  # the command line shows the field as its flag
        flag = "--" + field.replace("_", "-")
        assert cli_message(str(e.value)) == message.replace(field, flag, 1)


def test_settings_are_frozen_and_hold_what_was_given():
    s = JobSettings(shard_size=5, tokens=["delay"], first_shard_size=None, threads=None, max_duration=None)
    assert s.shard_size == 5 and s.tokens == ("delay",)  # a list becomes a tuple: the object stays frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.shard_size = 6  # type: ignore[misc]
    assert JobSettings() == JobSettings()  # defaults: a valid job


def test_token_specs_check_bandwidth_and_columns(codec):
    assert [t.column for t in JobSettings(tokens=("delay",)).token_specs(codec)] == ["tokens_delay"]
    with pytest.raises(CorpusError, match=r"give at least one token layout \(tokens\)$"):
        JobSettings(codes=False).token_specs(codec)
    with pytest.raises(CorpusError, match="unknown token layout 'zigzag'"):
        JobSettings(tokens=("zigzag",)).token_specs(codec)
    with pytest.raises(Exception, match="bandwidth"):
        JobSettings(bandwidth=5.0).token_specs(codec)


def test_job_errors_name_the_field(codec, folder):
    job = job_of(codec, folder, shard_size=4)
    for change, message in (
        ({"n_q": 0}, "n_q must be at least 1, got 0"),
        ({"first_shard_size": 0}, "first_shard_size must be at least 1, got 0"),
        ({"first_shard_size": 5}, "first_shard_size must be at most shard_size (4), got 5"),
        ({"num_items": -1}, "num_items must be 0 or more, got -1"),
        (
            {"settings": JobSettings(codes=False, shard_size=4)},
            "without the codes column, give at least one token layout (tokens)",
        ),
    ):
        with pytest.raises(CorpusError) as e:
            dataclasses.replace(job, **change)
        assert str(e.value) == message
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.n_q = 2  # type: ignore[misc]


@pytest.mark.parametrize("settings", [{}, TOKENS], ids=["codes", "tokens"])
def test_to_manifest_is_what_a_run_writes(codec, folder, tmp_path, settings):
    out = tmp_path / "out"
    summary = encode_corpus(folder, out, codec, 3.0, workers=0, **settings)
    written = json.loads((out / "manifest.json").read_text())
    job = job_of(codec, folder, bandwidth=3.0, workers=0, **settings)
    assert job.to_manifest() == job_part(written) == job_part(summary.manifest)
    # the same keys in the same order: the JSON text of the job's part is the file's
    assert json.dumps(job.to_manifest()) == json.dumps(job_part(written))
    assert list(written)[: len(job.to_manifest())] == list(job.to_manifest())
    # and it survives a JSON round trip unchanged, so a re-run compares equal values
    assert json.loads(json.dumps(job.to_manifest())) == job.to_manifest()
    assert job.matches(written) is None
    assert job.layout.num_shards == written["num_shards"] == written["counts"]["shards"]


def test_matches_refuses_a_changed_setting_with_the_reason(codec, folder):
    job = job_of(codec, folder, bandwidth=6.0)
    old = json.loads(json.dumps(job.to_manifest()))
    assert job.matches(old) is None
    assert job.matches({**old, "status": "complete", "counts": {}, "rvqkit_version": "0.0.1"}) is None
    reasons = {
        "bandwidth": "a job with other settings (bandwidth, n_q differ)",
        "shard_size": "a job with other settings (shard_size differ)",
        "max_duration": "a job with other settings (filters differ)",
        "tokens": "a job with other settings (tokens differ)",
        "lstm_batch": "a job with other settings (lstm_batched differ) (it was encoded with lstm_batch=2 or more)",
    }
    changed = {
        "bandwidth": 3.0,
        "shard_size": 500,
        "max_duration": 30.0,
        "tokens": ("delay",),
        "lstm_batch": 1,
    }
    for field, reason in reasons.items():
        other = job_of(codec, folder, old=old, **{field: changed[field]})
        assert other.matches(old) == reason, field
    weights = {**old, "model": {**old["model"], "weights_sha256": "0" * 64}}
    assert job.matches(weights) == "a job with other settings (model differ)"
    # older versions: no lstm_batched key (a batch of one), no first_shard_size (shard_size items)
    older = {k: v for k, v in old.items() if k not in ("lstm_batched", "first_shard_size")}
    assert job.matches(older) == (
        "a job with other settings (lstm_batched, first_shard_size differ) (it was encoded with lstm_batch=1)"
    )
    same_old = job_of(codec, folder, old=older, lstm_batch=1, first_shard_size=1000)
    assert same_old.matches(older) is None


def test_a_resumed_job_keeps_its_first_shard_size(codec, folder):
    old = job_of(codec, folder, first_shard_size=2).to_manifest()
    assert job_of(codec, folder, old=old).first_shard_size == 2
    assert job_of(codec, folder).first_shard_size == 16  # the default
    assert job_of(codec, folder, old={"shard_size": 7}, shard_size=7).first_shard_size == 7  # older versions
    assert job_of(codec, folder, shard_size=4).first_shard_size == 4  # at most shard_size


def test_refusal_text_of_a_run(codec, folder, tmp_path):
    out = tmp_path / "out"
    encode_corpus(folder, out, codec, 6.0, workers=0)
    with pytest.raises(CorpusError) as e:
        encode_corpus(folder, out, codec, 6.0, workers=0, max_duration=30)
    assert str(e.value) == (
        f"{out} holds a job with other settings (filters differ); use another output folder, "
        "or overwrite=True to replace it"
    )


def manifest_before_corpus_job(codec, src, n_q, shard_size, first_shard_size, settings) -> dict:
    """The job dict exactly as ``encode_corpus`` built it by hand before :class:`CorpusJob` (copied from
    that code, commit f1a7f29), for the folders written by those versions."""
    from rvqkit.corpus.shards import ShardLayout
    from rvqkit.corpus.tokenize import token_columns

    items = src.items
    layout = ShardLayout(len(items), shard_size, min(first_shard_size, shard_size))
    token_specs = token_columns(
        settings.get("tokens", ()),
        n_q,
        codec.codebook_size,
        settings.get("token_offset", 0),
        settings.get("token_begin", False),
        settings.get("token_end", False),
    )
    codes = settings.get("codes", True)
    return {
        "format": "rvqkit-corpus",
        "version": 1,
        "rvqkit_version": __version__,
        "model": {
            "name": codec.name,
            "weights_sha256": codec.weights_sha256,
            "sample_rate": codec.sample_rate,
            "channels": codec.channels,
            "frame_rate": codec.frame_rate,
            "codebook_size": codec.codebook_size,
        },
        "model_source": codec.name,
        "bandwidth": codec.config.bandwidth_for_n_q(n_q),
        "n_q": n_q,
        "lstm_batched": settings.get("lstm_batch", 8) > 1 and codec.device.type == "cpu",
        "codes": {"column": "codes", "type": "list<list<int16>>", "layout": "[n_q][frames]"}
        if codes
        else None,
        "shard_size": shard_size,
        "first_shard_size": layout.first,
        "num_shards": layout.num_shards,
        "num_items": len(items),
        "source": {
            "kind": src.kind,
            "location": src.location,
            "fingerprint": src.fingerprint(),
            "columns": list(src.extra_columns),
        },
        "filters": {"min_duration": 0.05, "max_duration": settings.get("max_duration")},
        "tokens": [s.describe() for s in token_specs] or None,
    }


@pytest.mark.parametrize("settings", [{}, TOKENS], ids=["codes", "tokens"])
def test_a_folder_written_before_corpus_job_resumes(codec, folder, tmp_path, settings):
    """A finished output whose manifest holds the old hand-built dict: a re-run keeps every shard."""
    out = tmp_path / "out"
    first = encode_corpus(folder, out, codec, 3.0, workers=0, **settings)
    before = manifest_before_corpus_job(
        codec,
        open_source(folder),
        n_q=4,
        shard_size=settings.get("shard_size", 1000),
        first_shard_size=settings.get("first_shard_size", 16),
        settings=settings,
    )
    written = json.loads((out / "manifest.json").read_text())
    assert job_part(written) == before  # the new code writes what the old one did
    run = {k: written[k] for k in RUN_KEYS}
    (out / "manifest.json").write_text(json.dumps({**before, **run}, indent=1) + "\n")
    again = encode_corpus(folder, out, codec, 3.0, workers=0, **settings)
    assert again.shards_written == 0 and again.shards_resumed == first.shards_written >= 1
    # and a manifest of the old code with other settings is still refused, by name
    (out / "manifest.json").write_text(json.dumps({**before, **run, "n_q": 8}) + "\n")
    with pytest.raises(CorpusError, match=r"other settings \(n_q differ\)"):
        encode_corpus(folder, out, codec, 3.0, workers=0, **settings)


def test_model_and_source_info(codec, folder):
    info = ModelInfo.of(codec)
    assert (info.sample_rate, info.channels, info.codebook_size) == (24000, 1, 1024)
    src = open_source(folder)
    s = SourceInfo.of(src)
    assert s.to_dict() == {
        "kind": "folder",
        "location": str(Path(folder).resolve()),
        "fingerprint": src.fingerprint(),
        "columns": [],
    }
