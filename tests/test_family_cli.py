"""``rvqkit encode`` / ``rvqkit decode`` with a Mimi, DAC or SNAC ``--model`` (small random models saved in
their published formats): the file's codes are ``load_family_model(...).encode`` of the same audio, the
decoded WAV is ``FamilyCodec.decode`` written the same way, and bad input is one error line, exit 1."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest
import soundfile as sf
from mimi_helpers import SMALL as MIMI_SMALL
from snac_helpers import SMALL_PLAIN
from test_families import DAC_TINY, _same_codes, _signal
from typer.testing import CliRunner

from rvqkit.audio import write_audio
from rvqkit.cli import app, load_commands
from rvqkit.dac import random_dac, save_dac_pth
from rvqkit.errors import BandwidthError, CodesError
from rvqkit.families import load_family_model
from rvqkit.family_codes import (
    family_bandwidths,
    format_kbps,
    load_family_codes,
    n_q_for_bandwidth,
)
from rvqkit.mimi import random_mimi, save_hf_folder
from rvqkit.snac import random_snac, save_snac, snac_state_dict

load_commands()
FAMILIES = ("mimi", "dac", "snac")


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
    """0.9 s of stereo at 22.05 kHz: every model mixes and resamples it."""
    path = tmp_path_factory.mktemp("audio") / "in.wav"
    x = _signal(19845, 22050, 5)
    sf.write(path, np.stack([x, 0.5 * x], axis=1), 22050, subtype="PCM_16")
    return path


def cli(*args: object):
    """(exit code, stderr) of the CLI run in this process."""
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.stderr if hasattr(res, "stderr") else res.output


def assert_clean_error(result, pattern: str) -> None:
    code, stderr = result
    assert code == 1, stderr
    assert "Traceback" not in stderr and "error: unexpected" not in stderr, stderr
    assert pattern in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("device ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr  # (the device notice may come first)


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_decode_equal_the_api(models, codecs, wav, tmp_path, family):
    fc = codecs[family]
    out = tmp_path / "codes.npz"
    code, stderr = cli("encode", wav, out, "-m", models[family])
    assert code == 0, stderr
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    api = fc.encode(x.T, sr)  # all codebooks by default
    saved = load_family_codes(out, fc)
    assert saved.family == family and saved.model == str(models[family])
    assert _same_codes(saved.codes, api)
    assert saved.length == round(x.shape[0] * fc.sample_rate / sr)
    with zipfile.ZipFile(out) as z:  # int16 codes, no pickle
        names = sorted(z.namelist())
    want = [f"codes_{i}.npy" for i in range(fc.num_codebooks)] if family == "snac" else ["codes.npy"]
    assert names == sorted([*want, "length.npy", "meta.npy"])

    wav_out = tmp_path / "out.wav"
    code, stderr = cli("decode", out, wav_out, "-m", models[family])
    assert code == 0, stderr
    ref = tmp_path / "ref.wav"
    write_audio(ref, fc.decode(api, length=saved.length).numpy(), fc.sample_rate)
    got, got_sr = sf.read(wav_out, dtype="int16")
    want_audio, _ = sf.read(ref, dtype="int16")
    assert got_sr == fc.sample_rate and got.shape == (saved.length,)
    assert np.array_equal(got, want_audio)


@pytest.mark.parametrize("family", FAMILIES)
def test_bandwidth_picks_codebooks(models, codecs, wav, tmp_path, family):
    fc = codecs[family]
    valid = family_bandwidths(fc)
    kbps = float(format_kbps(valid[0]))
    assert n_q_for_bandwidth(fc, kbps) == 1
    out = tmp_path / "one.npz"
    code, stderr = cli("encode", wav, out, "-m", models[family], "-b", format_kbps(valid[0]))
    assert code == 0, stderr
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    assert _same_codes(load_family_codes(out, fc).codes, fc.encode(x.T, sr, n_q=1))
    with pytest.raises(BandwidthError, match="valid bandwidths"):
        n_q_for_bandwidth(fc, valid[-1] + 1)
    res = cli("encode", wav, tmp_path / "bad.npz", "-m", models[family], "-b", "6")
    assert_clean_error(res, "valid bandwidths (kbps): " + ", ".join(map(format_kbps, valid)))
    assert not (tmp_path / "bad.npz").exists()


def _rewrite(src, dst, change) -> None:
    """Copy the .npz ``src`` to ``dst`` through ``change(dict of arrays)``."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(dst, **arrays)


def test_bad_files(models, wav, tmp_path):
    files = {}
    for family in FAMILIES:
        files[family] = tmp_path / f"{family}.npz"
        assert (
            cli("encode", wav, files[family], "-m", models[family], "-b", "0.001")[0] == 1
        )  # not a bandwidth
        assert cli("encode", wav, files[family], "-m", models[family])[0] == 0
    out = tmp_path / "o.wav"
    assert_clean_error(cli("decode", files["mimi"], out, "-m", models["dac"]), "holds Mimi codes")
    assert_clean_error(cli("decode", files["snac"], out, "-m", models["mimi"]), "holds SNAC codes")
    # the same family, another model: a DAC with other codebooks
    other = save_dac_pth(random_dac(dataclasses.replace(DAC_TINY, codebook_size=32)), tmp_path / "o.pth")
    assert_clean_error(cli("decode", files["dac"], out, "-m", other), "made by another DAC model")
    # a local path in the file is never loaded without --model
    assert_clean_error(cli("decode", files["dac"], out), "not a published DAC id")

    cut = tmp_path / "cut.npz"
    cut.write_bytes(files["dac"].read_bytes()[:-40])
    assert_clean_error(cli("decode", cut, out, "-m", models["dac"]), "error:")
    extra = tmp_path / "extra.npz"
    _rewrite(files["mimi"], extra, lambda a: a.update(junk=np.zeros(3)))
    assert_clean_error(cli("decode", extra, out, "-m", models["mimi"]), "unexpected member 'junk'")
    high = tmp_path / "high.npz"
    _rewrite(files["mimi"], high, lambda a: a["codes"].__setitem__((0, 0), MIMI_SMALL.codebook_size))
    assert_clean_error(cli("decode", high, out, "-m", models["mimi"]), "out of range")
    neg = tmp_path / "neg.npz"
    _rewrite(files["snac"], neg, lambda a: a["codes_1"].__setitem__(0, -1))
    assert_clean_error(cli("decode", neg, out, "-m", models["snac"]), "out of range")
    short = tmp_path / "short.npz"
    _rewrite(files["dac"], short, lambda a: a.update(length=a["length"] * 3))
    assert_clean_error(cli("decode", short, out, "-m", models["dac"]), "frames")
    huge = tmp_path / "huge.npz"  # a day and more: refused from the header, before any code is read
    _rewrite(files["dac"], huge, lambda a: a.update(length=np.array(24 * 3600 * 16000 + 1)))
    assert_clean_error(cli("decode", huge, out, "-m", models["dac"]), "(86400 s) expected")
    float_codes = tmp_path / "float.npz"
    _rewrite(files["dac"], float_codes, lambda a: a.update(codes=a["codes"].astype(np.float32)))
    assert_clean_error(cli("decode", float_codes, out, "-m", models["dac"]), "not allowed")
    assert not out.exists()
    with pytest.raises(CodesError, match="not a readable"):
        load_family_codes(cut)

    def bad_meta(a):
        meta = json.loads(a["meta"].tobytes())
        meta["family"] = "encodec"
        a["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    wrong = tmp_path / "wrong.npz"
    _rewrite(files["mimi"], wrong, bad_meta)
    assert_clean_error(cli("decode", wrong, out, "-m", models["mimi"]), "meta family must be one of")
    pickled = io.BytesIO()
    np.savez(pickled, length=np.array(5), meta=np.array([{"a": 1}], dtype=object), codes=np.zeros((1, 1)))
    (tmp_path / "pickled.npz").write_bytes(pickled.getvalue())
    assert_clean_error(cli("decode", tmp_path / "pickled.npz", out, "-m", models["mimi"]), "no pickled")


def test_nothing_overwritten_without_asking(models, codecs, wav, tmp_path):
    out = tmp_path / "c.npz"
    out.write_bytes(b"precious")
    assert_clean_error(cli("encode", wav, out, "-m", models["dac"]), "exists; pass --overwrite")
    assert out.read_bytes() == b"precious"
    assert cli("encode", wav, out, "-m", models["dac"], "--overwrite")[0] == 0
    assert load_family_codes(out).family == "dac"
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"keep")
    assert_clean_error(cli("decode", out, audio, "-m", models["dac"]), "exists; pass --overwrite")
    assert audio.read_bytes() == b"keep"
    code, stderr = cli("decode", out, audio, "-m", models["dac"], "--overwrite", "--n-q", "1")
    assert code == 0, stderr
    fc = codecs["dac"]
    codes = load_family_codes(out)
    ref = tmp_path / "ref.wav"
    write_audio(ref, fc.decode(codes.codes[:1], length=codes.length).numpy(), fc.sample_rate)
    assert np.array_equal(sf.read(audio, dtype="int16")[0], sf.read(ref, dtype="int16")[0])
    assert_clean_error(
        cli("decode", out, tmp_path / "b.wav", "-m", models["dac"], "--n-q", "9"),
        "--n-q must be between 1 and 3",
    )


@pytest.mark.parametrize("family", ["mimi", "snac"])
def test_decode_first_codebooks(models, codecs, wav, tmp_path, family):
    """--n-q K decodes from the first K codebooks (SNAC: the coarsest K levels) of the file."""
    fc = codecs[family]
    out = tmp_path / "c.npz"
    assert cli("encode", wav, out, "-m", models[family])[0] == 0
    code, stderr = cli("decode", out, tmp_path / "a.wav", "-m", models[family], "--n-q", "1")
    assert code == 0, stderr
    codes = load_family_codes(out)
    ref = tmp_path / "ref.wav"
    write_audio(ref, fc.decode(codes.codes[:1], length=codes.length).numpy(), fc.sample_rate)
    assert np.array_equal(sf.read(tmp_path / "a.wav", dtype="int16")[0], sf.read(ref, dtype="int16")[0])


def test_long_inputs_refused_before_reading(models, tmp_path, monkeypatch):
    import rvqkit.cli.family as family_cli

    monkeypatch.setattr(family_cli, "MAX_INPUT_SECONDS", 1)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros((16000 * 2, 1), np.float32), 16000, subtype="PCM_16")
    assert_clean_error(
        cli("encode", long, tmp_path / "c.npz", "-m", models["dac"]), "encoded whole, at most 1 s"
    )
    assert not (tmp_path / "c.npz").exists()


def test_encodec_files_still_go_to_encodec(hf_24k, wav, tmp_path):
    """EnCodec's path is unchanged: its codes file is not taken for a family one."""
    from rvqkit.family_codes import is_family_codes_file

    _, folder = hf_24k
    codes = tmp_path / "e.npz"
    code, stderr = cli("encode", wav, codes, "-m", folder, "-b", "1.5")
    assert code == 0, stderr
    assert not is_family_codes_file(codes)
    code, stderr = cli("decode", codes, tmp_path / "e.wav", "-m", folder)
    assert code == 0, stderr
    assert sf.info(tmp_path / "e.wav").samplerate == 24000
