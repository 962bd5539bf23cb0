"""``rvqkit eval`` end to end on a few short generated files (speech from espeak-ng where installed,
tones and noise otherwise) with a random-weight model and a random-weight entropy-coding LM: the report,
plots and HTML exist and hold the right rows; the numbers match the library computed in the same run;
bad inputs are skipped with a reason; missing optional packages are named."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_signal, save_meta_checkpoint

from rvqkit.bitstream import write_ecdc
from rvqkit.config import PRESETS
from rvqkit.eval import EvalError, evaluate, summarize
from rvqkit.eval import metrics as M
from rvqkit.eval.run import model_threads
from rvqkit.lm import EntropyLM, LMConfig, load_lm, torch_threads

SR = 16000
BANDWIDTHS = "1.5,6,24"
KS = "1,2,8"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rvqkit", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("eval_audio")
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(d / "speech.wav"), "The quick brown fox."], check=True)
    else:
        sf.write(d / "speech.wav", make_signal(int(1.4 * SR), 1, SR, seed=3).T, SR)
    sf.write(d / "tones.wav", make_signal(int(0.8 * SR), 1, SR, seed=1).T, SR)
    noise = np.random.default_rng(2).standard_normal((int(0.5 * SR), 2)) * 0.1  # stereo: averaged to mono
    sf.write(d / "noise.flac", noise.astype(np.float32), SR)
    sf.write(d / "silent.wav", np.zeros((int(0.3 * SR), 1), np.float32), SR)
    sf.write(d / "short.wav", make_signal(int(0.1 * SR), 1, SR, seed=4).T, SR)  # too short for PESQ
    sf.write(d / "nan.wav", np.full((800, 1), np.nan, np.float32), SR, subtype="FLOAT")
    return d


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory) -> Path:
    """A random-weight LM saved as Meta's checkpoint (its output layers scaled so that the predicted
    distributions are far from uniform, as a trained LM's are)."""
    torch.manual_seed(7)
    lm = EntropyLM(LMConfig.for_codec(PRESETS["encodec_24khz"]))
    with torch.no_grad():
        for lin in lm.linears:
            lin.weight.mul_(8.0)
    return save_meta_checkpoint(lm, tmp_path_factory.mktemp("lm"), "encodec_lm_24khz")


@pytest.fixture(scope="module")
def report(meta_24k, audio_dir, lm_path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("eval") / "report"
    res = run(
        "eval", audio_dir, "--model", meta_24k[1], "--out", out, "-b", BANDWIDTHS, "--n-q", KS,
        "--lm-model", lm_path, "--lm-items", "1", "--examples", "2", "--workers", "2",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return out, res


def read_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "items.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_report_files_and_rows(report):
    out, res = report
    info = json.loads((out / "report.json").read_text())
    rows = read_rows(out)
    baselines = [b["label"] for b in info["info"]["baselines"]["used"]]
    expected = {
        "rvqkit 1.5 kbps",
        "rvqkit 6 kbps",
        "rvqkit 24 kbps",
        "rvqkit k=1",
        "rvqkit k=2",
        "rvqkit k=8",
    }
    expected |= set(baselines)
    if shutil.which("opusenc") or M.available("pesq"):  # the eval extra (PyAV) or opus-tools
        assert any(b.startswith("opus") for b in baselines)
    # the NaN file is skipped with its reason; every other item has one row per setting
    assert [s["item"] for s in info["info"]["skipped_items"]] == ["nan"]
    assert "NaN" in info["info"]["skipped_items"][0]["reason"]
    items = {"noise", "short", "silent", "speech", "tones"}
    assert {r["item"] for r in rows} == items
    for item in items:
        assert sorted(r["label"] for r in rows if r["item"] == item) == sorted(expected)
    assert {s["label"] for s in info["summary"]} == expected
    for s in info["summary"]:
        assert {"si_sdr_mean", "si_sdr_median", "si_sdr_p10", "mel_distance_mean"} <= set(s)
    # the bad inputs: skipped metrics with their reasons, never a number
    silent = [r for r in rows if r["item"] == "silent"]
    assert all(r["si_sdr"] == "" and "si_sdr: silent original" in r["skipped"] for r in silent)
    if M.available("pesq"):
        short = [r for r in rows if r["item"] == "short"]
        assert all(r["pesq"] == "" and "too short for PESQ" in r["skipped"] for r in short)
    md = (out / "report.md").read_text()
    assert "## Means per setting" in md and "rvqkit k=8" in md and "## Codebook usage" in md
    assert "item nan:" in md and "silent original" in md
    assert "ViSQOL" in md  # skipped (with how to get it) or measured
    assert "rvqkit k=8" in res.stdout and "wrote" in res.stderr


def test_plots_and_html_are_local_and_complete(report):
    out, _ = report
    info = json.loads((out / "report.json").read_text())
    ran = [m for m, s in info["info"]["metrics"].items() if s == "ok"]
    assert {"si_sdr", "mel_distance", "stft_distance"} <= set(ran)
    assert info["plots"] == [f"plots/{m}.png" for m in ran] + ["plots/codebooks.png"]
    for p in info["plots"]:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    refs = re.findall(r"(?:src|href)='([^']+)'", page)
    assert not [r for r in refs if "://" in r or r.startswith("//")]  # all assets local
    for r in refs:
        assert (out / r).is_file(), r
    audio = [r for r in refs if r.startswith("audio/")]
    assert len([r for r in audio if r.endswith("_original.wav")]) == 2  # --examples 2
    assert any("rvqkit_6_kbps" in r for r in audio)
    assert page.count("<tr>") == len(info["summary"]) + 1


def test_numbers_match_the_library(report, audio_dir, lm_path, codec24):
    """Real bitrate, packed size, tokens per second and SI-SDR of one item, recomputed here."""
    out, _ = report
    rows = {(r["item"], r["label"]): r for r in read_rows(out)}
    x, sr = sf.read(audio_dir / "noise.flac", dtype="float32", always_2d=True)
    ref = codec24.prepare(x.T, sr)[0]
    with torch_threads(model_threads(2)):  # the model's threads in the run beside 2 workers
        enc = codec24.encode(ref, codec24.sample_rate, bandwidth=24.0, lstm_batch=8)
        decoded = {k: codec24.decode(enc, n_q=k)[0].numpy() for k in (1, 2, 8)}
    seconds = ref.shape[-1] / codec24.sample_rate
    for k in (1, 2, 8):
        row = rows[("noise", f"rvqkit k={k}")]
        y = decoded[k]
        assert float(row["si_sdr"]) == pytest.approx(M.si_sdr(ref.numpy(), y), abs=1e-5)
        frames = int(enc.frame_lengths[0])
        assert float(row["steps_per_s_flatten"]) == pytest.approx(k * frames / seconds)
        assert float(row["steps_per_s_parallel"]) == pytest.approx(frames / seconds)
        assert float(row["steps_per_s_delay"]) == pytest.approx((frames + k - 1) / seconds)
    # .ecdc sizes: packed for every item; LM entropy-coded for the first item read only (--lm-items 1):
    # noise.flac (nan.wav, before it in the folder's order, is unreadable)
    lm = load_lm(lm_path)
    for bw in (1.5, 6.0, 24.0):
        n = codec24.n_q_for(bw)
        sub = codec24.wrap_codes(enc.codes[:, :n], None, enc.lengths, enc.frame_lengths)
        packed, coded = io.BytesIO(), io.BytesIO()
        write_ecdc(packed, sub, lm=None)
        with torch_threads(1):  # as in the workers
            write_ecdc(coded, sub, lm=lm)
        row = rows[("noise", f"rvqkit {bw:g} kbps")]
        assert float(row["ecdc_kbps"]) == pytest.approx(len(packed.getvalue()) * 8 / 1000 / seconds)
        assert float(row["real_kbps"]) == pytest.approx(len(coded.getvalue()) * 8 / 1000 / seconds)
    assert {r["item"] for r in rows.values() if r["ecdc_lm_kbps"]} == {"noise"}
    assert all(math.isfinite(float(r["real_kbps"])) for r in rows.values() if r["codec"] != "rvqkit")


def test_python_api_in_process(codec24):
    x = make_signal(int(0.8 * SR), 1, SR, seed=9)
    df = evaluate(
        codec24,
        {"a": (x, SR), "b": (x[:, : SR // 2], SR)},
        bandwidths=[1.5, 3.0],
        n_q=[1, 4],
        baselines=False,
        metrics=["si_sdr", "mel_distance"],
        workers=0,
    )
    assert sorted(df["label"].unique()) == ["rvqkit 1.5 kbps", "rvqkit 3 kbps", "rvqkit k=1", "rvqkit k=4"]
    assert len(df) == 8
    ref = codec24.prepare(x, SR)[0].numpy()
    y = codec24.decode(codec24.encode(x, SR, bandwidth=3.0, lstm_batch=8), n_q=1)[0].numpy()
    got = df[(df["item"] == "a") & (df["label"] == "rvqkit k=1")]["mel_distance"].item()
    assert got == pytest.approx(M.mel_distance(ref, y, codec24.sample_rate), rel=1e-6)
    table = summarize(df)
    assert list(table["label"]) == ["rvqkit 1.5 kbps", "rvqkit 3 kbps", "rvqkit k=1", "rvqkit k=4"]
    row = table[table["label"] == "rvqkit k=4"].iloc[0]
    values = df[df["label"] == "rvqkit k=4"]["si_sdr"].to_numpy()
    assert row["si_sdr_mean"] == pytest.approx(values.mean())
    assert row["si_sdr_median"] == pytest.approx(np.median(values))
    assert row["si_sdr_p10"] == pytest.approx(np.percentile(values, 10))
    assert df.attrs["eval"]["baselines"]["missing"] == {"all": "baselines turned off"}
    with pytest.raises(
        EvalError, match=r"n_q must be codebook counts in \[1, 4\] \(the top bandwidth.s\), got \[40\]"
    ):
        evaluate(codec24, {"a": (x, SR)}, bandwidths=[3.0], n_q=[1, 40], workers=0)


def test_without_the_extra_names_what_it_skipped(meta_24k, audio_dir, tmp_path):
    """pesq, pystoi and av made unimportable, opusenc off the PATH: the report still comes, and says
    which metrics and baselines it skipped and how to get them."""
    block = tmp_path / "block"
    for name in ("pesq", "pystoi", "av"):
        (block / name).mkdir(parents=True)
        (block / name / "__init__.py").write_text("raise ImportError('blocked by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(block), "PATH": str(Path(sys.executable).parent)}
    out = tmp_path / "r"
    res = run(
        "eval", audio_dir / "tones.wav", "-m", meta_24k[1], "-o", out, "-b", "1.5", "--n-q", "1",
        "--lm-items", "0", "--workers", "0", "--no-plots", env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "skipped PESQ (wb): needs the 'pesq' package: pip install 'rvqkit[eval]'" in res.stderr
    assert "skipped STOI: needs the 'pystoi' package" in res.stderr
    assert "baseline opus missing: no Opus encoder" in res.stderr
    assert "baseline mp3 missing" in res.stderr
    assert "without entropy coding" in res.stderr
    md = (out / "report.md").read_text()
    assert "PESQ (wb) skipped" in md and "baseline opus missing" in md
    rows = read_rows(out)
    assert {r["label"] for r in rows} == {"rvqkit 1.5 kbps", "rvqkit k=1"}
    assert all(r["real_kbps"] == r["ecdc_kbps"] for r in rows)  # no LM: the packed size


def test_bad_arguments_are_one_clean_line(meta_24k, audio_dir, report, tmp_path):
    out, _ = report
    for args, message in (
        (("-o", out), "already holds"),
        (("-o", tmp_path / "b", "-b", "5"), "valid bandwidths (kbps): 1.5, 3, 6, 12, 24"),
        (("-o", tmp_path / "c", "--metrics", "loudness"), "unknown metrics ['loudness']"),
        (("-o", tmp_path / "d", "--n-q", "one"), "--n-q takes a comma-separated list"),
    ):
        res = run("eval", audio_dir / "tones.wav", "-m", meta_24k[1], "--workers", "0", *args)
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert message in res.stderr, res.stderr
    res = run("eval", tmp_path / "missing", "-m", meta_24k[1], "-o", tmp_path / "e")
    assert res.returncode == 1 and "no such file or folder" in res.stderr
