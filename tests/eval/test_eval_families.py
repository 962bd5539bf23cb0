"""``rvqkit eval`` with Mimi, DAC and SNAC models (small random models saved in their published formats):
the rows are codebook counts whose scores equal ``FamilyCodec.encode(n_q=k)`` + ``decode`` scored here,
at the nominal kbps; ``--model`` repeated gives one report with every model's rows; bad settings are one
clean error line."""

from __future__ import annotations

import csv
import json
import math

import pytest
import soundfile as sf
from mimi_helpers import SMALL as MIMI_SMALL
from snac_helpers import SMALL_PLAIN
from test_families import DAC_TINY, _signal
from typer.testing import CliRunner

from rvqkit.cli import app, load_commands
from rvqkit.dac import random_dac, save_dac_pth
from rvqkit.eval import EvalError, compare, evaluate, run_eval
from rvqkit.eval import metrics as M
from rvqkit.eval.report import summary_rows
from rvqkit.families import load_family_model
from rvqkit.mimi import random_mimi, save_hf_folder
from rvqkit.snac import random_snac, save_snac, snac_state_dict

load_commands()
FAMILIES = ("mimi", "dac", "snac")
METRICS = ("si_sdr", "mel_distance")
IN_SR = 22050  # every model resamples the input


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("family_models")
    return {
        "mimi": save_hf_folder(random_mimi(MIMI_SMALL, seed=3), root / "mimi_hf"),
        "dac": save_dac_pth(random_dac(DAC_TINY, seed=1), root / "weights.pth"),
        "snac": save_snac(root / "snac_bin", snac_state_dict(random_snac(SMALL_PLAIN, seed=2)), SMALL_PLAIN),
    }


@pytest.fixture(scope="module")
def codecs(models):
    return {f: load_family_model(p) for f, p in models.items()}


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    """0.6 s of mono at 22.05 kHz."""
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    sf.write(path, _signal(int(0.6 * IN_SR), IN_SR, 5), IN_SR, subtype="FLOAT")
    return path


def expected_kbps(fc, k: int) -> float:
    bits = math.log2(fc.config.codebook_size)
    if fc.family == "snac":  # the first k levels' frame rates summed
        return sum(fc.frame_rate / s for s in fc.config.vq_strides[:k]) * bits / 1000
    return k * bits * fc.frame_rate / 1000


def cli(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.stderr if hasattr(res, "stderr") else res.output


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_equal_encode_decode(codecs, family):
    """Each k row's scores are those of encode(n_q=k) + decode computed here (SNAC: the first k levels);
    kbps is k x log2(codebook_size) x frame rate (SNAC: the levels' rates summed)."""
    fc = codecs[family]
    x = _signal(int(0.5 * IN_SR), IN_SR, 1)
    y = _signal(int(0.3 * IN_SR), IN_SR, 2)
    df = evaluate(fc, {"a": (x, IN_SR), "b": (y, IN_SR)}, baselines=False, metrics=METRICS, workers=0)
    ks = list(range(1, fc.num_codebooks + 1))
    assert len(df) == 2 * len(ks)
    assert set(df["label"]) == {f"{family} k={k}" for k in ks}
    assert set(df["setting"]) == {"k"}
    max_lag = int(round(0.05 * fc.sample_rate))
    for item, signal in (("a", x), ("b", y)):
        ref = fc.prepare(signal, IN_SR)[0].numpy()  # the original at the model's rate
        for k in ks:
            est = fc.decode(fc.encode(ref, fc.sample_rate, n_q=k), length=ref.shape[-1]).numpy()
            want = M.score(ref, est, fc.sample_rate, METRICS, max_lag)
            row = df[(df["item"] == item) & (df["n_q"] == k)].iloc[0]
            assert row["si_sdr"] == pytest.approx(want["si_sdr"], abs=1e-5)
            assert row["mel_distance"] == pytest.approx(want["mel_distance"], rel=1e-6)
            assert row["kbps"] == pytest.approx(expected_kbps(fc, k))
            assert row["real_kbps"] == row["kbps"] and math.isnan(row["ecdc_kbps"])
            assert row["seconds"] == pytest.approx(ref.shape[-1] / fc.sample_rate)
    info = df.attrs["eval"]
    assert info["family"] == family and info["n_q"] == ks and len(info["codebooks"]) == len(ks)
    assert "real_kbps is the nominal bitrate" in info["entropy_coding"]["note"]
    summary = {s["n_q"]: s for s in summary_rows(df.to_dict("records"), METRICS)}
    assert set(summary) == set(ks)


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_settings(codecs, family):
    fc = codecs[family]
    x = _signal(4000, IN_SR, 1)
    top = fc.num_codebooks
    what = "level" if family == "snac" else "codebook"
    with pytest.raises(EvalError, match=rf"n_q must be {what} counts in \[1, {top}\].*got \[{top + 1}\]"):
        run_eval(fc, {"a": (x, IN_SR)}, n_q=[1, top + 1], baselines=False, workers=0)
    with pytest.raises(EvalError, match="bandwidths= selects EnCodec bandwidths"):
        run_eval(fc, {"a": (x, IN_SR)}, bandwidths=[6.0], baselines=False, workers=0)


def test_compare_two_models_one_report(models, codecs, wav, tmp_path):
    """``--model`` twice: one report, each row naming its model; the DAC rows equal its own run."""
    out = tmp_path / "r"
    code, stderr = cli(
        "eval", wav, "-m", models["mimi"], "-m", models["dac"], "-o", out, "--n-q", "1,2",
        "--metrics", "si_sdr", "--workers", "0", "--examples", "1", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text())
    info = report["info"]
    assert info["model"] == "mimi_hf vs weights.pth"
    assert [m["name"] for m in info["models"]] == ["mimi_hf", "weights.pth"]
    assert [m["family"] for m in info["models"]] == ["mimi", "dac"]
    labels = [s["label"] for s in report["summary"]]
    model_labels = ["mimi_hf k=1", "mimi_hf k=2", "weights.pth k=1", "weights.pth k=2"]
    assert labels[:4] == model_labels  # each model's rows in the order given, then the baselines
    base = [s["label"] for s in report["summary"][4:]]
    assert all(s["setting"] == "baseline" for s in report["summary"][4:])
    if info["baselines"]["used"]:  # 24 kHz (Mimi) and 16 kHz (DAC): run once each, the rate named
        assert any(b.endswith(" @ 24 kHz") for b in base) and any(b.endswith(" @ 16 kHz") for b in base)
        assert all(b.endswith(" kHz") for b in base)
    with open(out / "items.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"mimi_hf", "weights.pth"}
    fc = codecs["dac"]
    direct = run_eval(fc, [str(wav)], n_q=[2], baselines=False, metrics=["si_sdr"], workers=0)
    (want,) = direct.rows
    (got,) = [r for r in rows if r["label"] == "weights.pth k=2"]
    assert float(got["si_sdr"]) == pytest.approx(want["si_sdr"], abs=1e-6)
    assert float(got["kbps"]) == pytest.approx(expected_kbps(fc, 2))
    md = (out / "report.md").read_text()
    for label in model_labels:
        assert f"| {label} |" in md
    assert "mimi_hf: codebook usage" in md and "weights.pth: codebook usage" in md
    assert (out / "plots" / "si_sdr.png").is_file() and (out / "plots" / "codebooks_mimi_hf.png").is_file()
    wavs = sorted(p.name for p in (out / "audio").iterdir())
    assert any("mimi_hf_k_2" in w for w in wavs) and any("weights.pth_k_2" in w for w in wavs)
    dac_wav = next(p for p in (out / "audio").iterdir() if "weights.pth_k_2" in p.name)
    assert sf.info(dac_wav).samplerate == fc.sample_rate


def test_compare_in_python_names_and_checks(codecs):
    x = _signal(6000, IN_SR, 3)
    res = compare([codecs["snac"], codecs["mimi"]], {"a": (x, IN_SR)}, n_q=[1], names=["s", "m"],
                  baselines=False, metrics=["si_sdr"], workers=0)  # fmt: skip
    assert [(r["model"], r["label"]) for r in res.rows] == [("s", "s k=1"), ("m", "m k=1")]
    # n_q beyond one model's codebooks: the error names that model, before anything runs
    top = codecs["snac"].num_codebooks
    with pytest.raises(EvalError, match=rf"^s: n_q must be level counts in \[1, {top}\]"):
        compare([codecs["snac"], codecs["mimi"]], {"a": (x, IN_SR)}, n_q=[top + 1], names=["s", "m"])


def test_cli_errors_are_one_clean_line(models, wav, tmp_path):
    dac = models["dac"]
    for args, message in (
        (("-m", dac, "--n-q", "1,5"), "--n-q must be codebook counts in [1, 3]"),
        (
            ("-m", models["mimi"], "-m", dac, "--n-q", "5"),
            "weights.pth: --n-q must be codebook counts in [1, 3]",
        ),
        (("-m", dac, "-b", "6"), "--bandwidth selects EnCodec bandwidths"),
        (("-m", dac, "-m", dac), "is given more than once"),
        (("-m", tmp_path / "no_such_model"), "no_such_model"),
    ):
        code, stderr = cli("eval", wav, "-o", tmp_path / "r", "--workers", "0", "--device", "cpu", *args)
        assert code == 1, stderr
        assert "Traceback" not in stderr and "unexpected" not in stderr and "items x settings" not in stderr
        assert message in " ".join(stderr.split()), stderr
        assert not (tmp_path / "r" / "report.json").exists()


def test_compare_encodec_and_dac(codec24, codecs):
    """EnCodec beside DAC: bandwidths apply to EnCodec only, n_q to both; each model's rows equal its own
    run alone."""
    x = _signal(int(0.4 * IN_SR), IN_SR, 4)
    inputs = {"a": (x, IN_SR)}
    opts = {"baselines": False, "metrics": ["si_sdr"], "workers": 0}
    res = compare([codec24, codecs["dac"]], inputs, bandwidths=[1.5], n_q=[1, 2], **opts)
    name = codec24.name
    assert [r["label"] for r in res.rows] == [
        f"{name} 1.5 kbps", f"{name} k=1", f"{name} k=2", "weights.pth k=1", "weights.pth k=2",
    ]  # fmt: skip
    assert res.info["model"] == f"{name} vs weights.pth"
    for codec, prefix in ((codec24, name), (codecs["dac"], "weights.pth")):
        alone = run_eval(codec, inputs, [1.5] if codec is codec24 else None, [1, 2], **opts)
        got = {r["label"]: r["si_sdr"] for r in res.rows if r["model"] == prefix}
        want = {r["label"].replace(r["label"].split()[0], prefix, 1): r["si_sdr"] for r in alone.rows}
        assert got == pytest.approx(want, abs=1e-6)
    with pytest.raises(EvalError, match=rf"^{name}: n_q must be codebook counts in \[1, 2\]"):
        compare([codecs["dac"], codec24], inputs, bandwidths=[1.5], n_q=[3], **opts)
