"""Corpus encoding with the Mimi, DAC and SNAC models: each row's codes equal ``FamilyCodec.encode`` of its
file alone (mixed lengths, rates and channels, batches of several items), resume, the manifest's model
check, decode and stats of the output, and clean errors (library and command line). Random small models
saved in their published formats; clips of 0.2 to 1.2 s."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from corpus_helpers import one_thread, read_output, write_clips  # noqa: F401 (one_thread: autouse fixture)
from mimi_helpers import SMALL as MIMI_SMALL
from snac_helpers import SMALL_PLAIN
from typer.testing import CliRunner

from rvqkit.cli import app, load_commands
from rvqkit.corpus import CorpusError, corpus_stats, decode_corpus, encode_corpus, encode_dataset
from rvqkit.dac import DacConfig, random_dac, save_dac_hf
from rvqkit.families import load_family_model
from rvqkit.family_codec import FamilyCodec
from rvqkit.mimi import random_mimi, save_hf_folder
from rvqkit.snac import random_snac, save_snac, snac_state_dict

pytest.importorskip("pyarrow")
load_commands()  # the sub-commands register when their modules are imported

DAC_TINY = DacConfig(
    name="tiny",
    sampling_rate=16000,
    encoder_dim=4,
    encoder_rates=(2, 4, 5, 8),
    latent_dim=64,
    decoder_dim=64,
    decoder_rates=(8, 5, 4, 2),
    num_codebooks=3,
    codebook_size=64,
)
#: family -> the job's codebook choice (DAC by an exact bandwidth: 2 of its 3 codebooks)
CHOICE = {"mimi": {"n_q": 4}, "dac": {"bandwidth": 0.6}, "snac": {}}
N_Q = {"mimi": 4, "dac": 2, "snac": 2}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    snac = random_snac(SMALL_PLAIN, seed=2)
    return {
        "mimi": save_hf_folder(random_mimi(MIMI_SMALL, seed=3), root / "mimi"),
        "mimi_other": save_hf_folder(random_mimi(MIMI_SMALL, seed=4), root / "mimi_other"),
        "dac": save_dac_hf(random_dac(DAC_TINY, seed=1), root / "dac"),
        "snac": save_snac(root / "snac", snac_state_dict(snac), SMALL_PLAIN),
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """6 clips of 0.2 to 1.2 s, 16 to 44.1 kHz, mono and stereo, WAV/FLAC/OGG/MP3."""
    root = tmp_path_factory.mktemp("audio")
    write_clips(root, 6, min_s=0.2, step_s=0.25)
    return root


def alone(fc: FamilyCodec, path: str, n_q: int | None) -> list[np.ndarray]:
    """The file's codes by ``FamilyCodec.encode`` of it alone, as rows (codebooks or levels)."""
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    codes = fc.encode(x.T, sr, n_q=n_q)
    return [c.numpy() for c in codes]


def batch_sizes(monkeypatch) -> list[int]:
    """Record the number of items of every ``FamilyCodec.encode_items`` call."""
    sizes: list[int] = []
    real = FamilyCodec.encode_items

    def spy(self, items, sample_rate, n_q=None):
        sizes.append(len(items))
        return real(self, items, sample_rate, n_q)

    monkeypatch.setattr(FamilyCodec, "encode_items", spy)
    return sizes


@pytest.mark.parametrize("family", ["mimi", "dac", "snac"])
def test_rows_equal_encode_alone_and_resume(family, models, folder, tmp_path, monkeypatch):
    out = tmp_path / "out"
    sizes = batch_sizes(monkeypatch)
    summary = encode_corpus(
        folder, out, models[family], workers=0, shard_size=3, first_shard_size=2, lstm_batch=4,
        **CHOICE[family],
    )  # fmt: skip
    assert summary.counts["rows"] == 6 and summary.counts["errors"] == 0
    assert max(sizes) > 1, sizes  # items were encoded together
    fc = load_family_model(models[family])
    table = read_output(out)
    for row in table.to_pylist():
        want = alone(fc, row["path"], N_Q[family])
        got = [np.asarray(r, dtype=np.int64) for r in row["codes"]]
        assert len(got) == len(want) == N_Q[family], row["id"]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w, err_msg=row["id"])
        assert row["num_frames"] == len(want[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["family"] == family and manifest["model"]["family"] == family
    assert manifest["model_source"] == str(Path(models[family]).resolve())
    assert manifest["n_q"] == N_Q[family] and manifest["lstm_batched"] is False
    assert manifest["codes"]["layout"] == ("[level][frames_level]" if family == "snac" else "[n_q][frames]")
    meta = pq.read_schema(sorted((out / "data").glob("*.parquet"))[0]).metadata
    assert meta[b"rvqkit.family"] == family.encode()
    assert meta[b"rvqkit.model_source"] == manifest["model_source"].encode()
    # a second run resumes: nothing is encoded again
    sizes.clear()
    again = encode_corpus(
        folder, out, models[family], workers=0, shard_size=3, lstm_batch=4, **CHOICE[family]
    )
    assert again.shards_written == 0 and again.shards_resumed == 3 and sizes == []
    assert read_output(out).equals(table)


def test_manifest_refuses_another_model_or_n_q(models, folder, tmp_path):
    out = tmp_path / "out"
    encode_corpus(folder, out, models["mimi"], n_q=2, workers=0, shard_size=6, max_duration=0.5)
    with pytest.raises(CorpusError, match=r"other settings \(model differ\)"):
        encode_corpus(folder, out, models["mimi_other"], n_q=2, workers=0, shard_size=6, max_duration=0.5)
    with pytest.raises(CorpusError, match=r"other settings \(bandwidth, n_q differ\)"):
        encode_corpus(folder, out, models["mimi"], n_q=3, workers=0, shard_size=6, max_duration=0.5)
    with pytest.raises(CorpusError, match=r"other settings \(model, family"):
        encode_corpus(folder, out, models["dac"], workers=0, shard_size=6, max_duration=0.5)


@pytest.mark.parametrize("family", ["mimi", "snac"])
def test_decode_and_stats(family, models, folder, tmp_path):
    out = tmp_path / "out"
    encode_corpus(folder, out, models[family], workers=0, max_duration=0.5, **CHOICE[family])
    fc = load_family_model(models[family])
    table = read_output(out).to_pylist()
    written = decode_corpus(out, tmp_path / "wav", n_q=1)
    assert len(written) == len(table) == 3
    for row, path in zip(table, written, strict=True):
        codes = [torch.tensor(r, dtype=torch.int64) for r in row["codes"]][:1]
        want = fc.decode(codes if family == "snac" else torch.stack(codes), length=row["model_samples"])
        got, sr = sf.read(path, dtype="float32", always_2d=True)
        assert sr == fc.sample_rate and got.shape[0] == row["model_samples"]
        np.testing.assert_allclose(got.T, np.clip(want.numpy(), -1, 1), atol=1.5 / 32768)
    st = corpus_stats(out)
    assert st.family == family and st.n_q == N_Q[family] and st.rows == 3
    assert st.frames == sum(r["num_frames"] for r in table)
    total = sum(len(level) for r in table for level in r["codes"])
    assert int(st.histogram.sum()) == total
    assert (st.layouts == []) == (family == "snac")


def test_library_errors_name_parameters(models, folder, tmp_path):
    for kwargs, pattern in (
        (
            {"bandwidth": 0.5},
            r"^bandwidth=0.5 kbps is not one of this mimi model's \(0.087, 0.175, .*; give n_q=K \(codebooks, 1 to 16\)",
        ),
        ({"n_q": 17}, r"^n_q must be between 1 and 16 \(the model's codebooks\), got 17"),
        ({"n_q": 2, "bandwidth": 0.35}, r"^bandwidth=0.35 kbps is 4 codebooks, but n_q=2"),
    ):
        with pytest.raises(CorpusError, match=pattern):
            encode_corpus(folder, tmp_path / "out", models["mimi"], workers=0, **kwargs)
    with pytest.raises(CorpusError, match=r"^tokens: .* SNAC"):
        encode_corpus(folder, tmp_path / "out", models["snac"], tokens=["flatten"], workers=0)
    assert not (tmp_path / "out").exists()  # refused before anything is written
    with pytest.raises(
        CorpusError, match=r"^encode_dataset runs EnCodec \(a Codec\) only for now, got MimiCodec"
    ):
        encode_dataset(object(), load_family_model(models["mimi"]))
    with pytest.raises(CorpusError, match=r"^n_q=K is for Mimi, DAC and SNAC models; .* bandwidth=KBPS"):
        encode_corpus(folder, tmp_path / "out", "random-24khz", n_q=2, workers=0)


def cli(*args: object) -> tuple[int, str]:
    """(exit code, stderr) of the CLI run in this process."""
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.stderr


def assert_clean_error(result: tuple[int, str], pattern: str) -> None:
    code, stderr = result
    assert code == 1, stderr
    assert "Traceback" not in stderr and "error: unexpected" not in stderr, stderr
    assert pattern in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("device ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr


def test_cli_encode_decode_stats(models, folder, tmp_path):
    out = tmp_path / "out"
    base = ("corpus", "encode", folder, out, "-m", models["mimi"], "--workers", "0", "--threads", "1", "-q")
    base += ("--max-duration", 0.5)
    code, stderr = cli(*base, "--n-q", 2)
    assert code == 0, stderr
    assert "3 rows" in stderr
    fc = load_family_model(models["mimi"])
    for row in read_output(out).to_pylist():
        for g, w in zip(row["codes"], alone(fc, row["path"], 2), strict=True):
            np.testing.assert_array_equal(np.asarray(g), w)
    res = CliRunner().invoke(app, ["corpus", "stats", str(out), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["family"] == "mimi", res.stderr
    code, stderr = cli("corpus", "decode", out, tmp_path / "wav", "--n-q", 1)
    assert code == 0 and "wrote 3 files" in stderr, stderr
    assert_clean_error(
        cli("corpus", "decode", out, tmp_path / "wav2", "--n-q", 3), "--n-q must be between 1 and 2"
    )
    assert_clean_error(cli(*base, "-b", 7), "--bandwidth 7.0 kbps is not one of this mimi model's")
    assert_clean_error(cli(*base, "--n-q", 3), "other settings (bandwidth, n_q differ)")
    other = ("corpus", "encode", folder, tmp_path / "other", "-m", models["mimi"], "--n-q", 17)
    assert_clean_error(cli(*other), "--n-q must be between 1 and 16")
    assert not (tmp_path / "other").exists()


def test_mimi_tokens_only_decode_as_the_codes(models, folder, tmp_path):
    """--tokens on Mimi codes: a tokens-only output holds the same codes (decoded back through the layout
    settings in the manifest), and decodes to the same audio."""
    common = {"n_q": 3, "workers": 0, "max_duration": 0.5}
    encode_corpus(folder, tmp_path / "codes", models["mimi"], **common)
    encode_corpus(folder, tmp_path / "tok", models["mimi"], tokens=["delay"], codes=False, **common)
    manifest = json.loads((tmp_path / "tok" / "manifest.json").read_text())
    assert manifest["codes"] is None and manifest["tokens"][0]["column"] == "tokens_delay"
    assert manifest["tokens"][0]["settings"]["codebook_size"] == MIMI_SMALL.codebook_size
    a = decode_corpus(tmp_path / "codes", tmp_path / "wav_codes")
    b = decode_corpus(tmp_path / "tok", tmp_path / "wav_tok")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(sf.read(x)[0], sf.read(y)[0])
    st, sc = corpus_stats(tmp_path / "tok"), corpus_stats(tmp_path / "codes")
    np.testing.assert_array_equal(st.histogram, sc.histogram)
