"""``rvqkit inspect`` with Mimi and DAC models (:mod:`rvqkit.family_inspector`): the walk's codes are the
family's exact codes, each residual is the latent minus what the first codebooks stand for, the
reconstructions are ``FamilyCodec.decode`` of the first k, and SNAC or bad settings are one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_families import _signal
from test_family_cli import assert_clean_error, cli, codecs, models, wav  # noqa: F401  (fixtures)

from rvqkit.errors import BandwidthError, CodesError
from rvqkit.family_inspector import family_kbps, inspect_family
from rvqkit.inspector import frame_norm, snr_db


@pytest.mark.parametrize("family", ["mimi", "dac"])
def test_walk_matches_the_model(codecs, family):  # noqa: F811  (fixtures imported above)
    fc = codecs[family]
    x = _signal(fc.sample_rate, fc.sample_rate, 7)  # 1 s at the model's rate
    insp = inspect_family(fc, x, fc.sample_rate, ks=[1, 2])
    r = insp.report
    codes = fc.encode(x, fc.sample_rate)
    assert torch.equal(insp.codes, codes) and r["n_q"] == fc.num_codebooks == len(r["layers"])
    latent = fc.latent(fc.prepare(x, fc.sample_rate)[0])
    assert r["embedding"]["frame_norm"] == frame_norm(latent)
    # each layer's residual is the latent minus what the first codebooks stand for (random weights: the
    # norms need not shrink, so only the arithmetic is checked)
    for k in (0, len(r["layers"]) - 1):
        left = frame_norm(latent - fc.dequantize(codes[: k + 1]))
        assert r["layers"][k]["residual_norm"] == pytest.approx(left)
        assert r["layers"][k]["relative_residual"] == pytest.approx(left / r["embedding"]["frame_norm"])
    for row, k in zip(r["reconstructions"], [1, 2], strict=True):
        y = fc.decode(codes[:k], length=x.shape[-1])
        assert torch.equal(insp.reconstructions[k], y)
        assert row["snr_db"] == snr_db(torch.as_tensor(x)[None], y)
        assert row["bandwidth_kbps"] == pytest.approx(family_kbps(fc, k))
    assert r["frames"] == codes.shape[-1] and r["codebook_size"] == fc.config.codebook_size


def test_bad_settings(codecs):  # noqa: F811
    x = np.zeros(2400, np.float32) + 0.1
    with pytest.raises(CodesError, match="SNAC's levels run at several"):
        inspect_family(codecs["snac"], x, 24000)
    dac = codecs["dac"]
    with pytest.raises(BandwidthError, match=rf"n_q must be an integer from 1 to {dac.num_codebooks}"):
        inspect_family(dac, x, 24000, n_q=dac.num_codebooks + 1)
    with pytest.raises(BandwidthError, match=r"must be in \[1, 2\] with n_q=2, got \[3\]"):
        inspect_family(dac, x, 24000, n_q=2, ks=[1, 3])


def test_cli(models, codecs, wav, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from rvqkit.cli import app

    out = tmp_path / "report"
    res = CliRunner().invoke(
        app, ["inspect", str(wav), "-m", str(models["dac"]), "--n-q", "2", "--k", "1,2", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["n_q"] == 2 and [r["n_q"] for r in report["reconstructions"]] == [1, 2]
    assert (out / "report.md").exists() and list(out.glob("*.png"))
    assert_clean_error(cli("inspect", wav, "-m", models["snac"]), "SNAC's levels run at several")
    assert_clean_error(cli("inspect", wav, "-m", models["mimi"], "-b", "6"), "--bandwidth is EnCodec's")
    assert_clean_error(cli("inspect", wav, "-m", "random-24khz", "--n-q", "2"), "--n-q is for Mimi and DAC")
