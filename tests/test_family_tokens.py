# ruff: noqa: F811  (the fixtures of test_family_cli, imported by name, are the arguments)
"""Mimi, DAC and SNAC codes as tokens (rvqkit.tokens.families, `rvqkit tokens` / `rvqkit detokenize` on a
family codes file): every applicable layout gives the codes back exactly, codebook 0 (Mimi's semantic
one) comes first in each frame where documented, SNAC takes Orpheus's flattening and nothing else."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from test_family_cli import assert_clean_error, cli, codecs, models, wav  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from rvqkit.cli import app
from rvqkit.family_codes import FamilyCodes, load_family_codes, save_family_codes
from rvqkit.snac import tokens as snac_tokens
from rvqkit.tokens import TokenError, TokenLayout, read_tokens
from rvqkit.tokens.families import (
    FIRST_CODEBOOK_FIRST_PER_FRAME,
    family_detokenize,
    family_layouts,
    family_tokens,
)


def _codes(codecs, family: str) -> torch.Tensor:
    fc = codecs[family]
    x = np.sin(np.arange(int(0.7 * fc.sample_rate)) * 0.05).astype(np.float32)
    return fc.encode(
        x + 0.01 * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32), fc.sample_rate
    )


@pytest.mark.parametrize("family", ["mimi", "dac"])
def test_every_layout_round_trips(codecs, family):
    codes = _codes(codecs, family)
    size = int(codecs[family].config.codebook_size)
    assert codes.dim() == 2 and codes.shape[0] > 1
    assert family_layouts(family) == ["flatten", "codebook", "delay", "parallel"]
    for layout in family_layouts(family):
        for offset in (0, 32000):
            ids = family_tokens(codes, family, layout, size, offset)
            back = family_detokenize(ids, family, layout, size, codes.shape[0], offset)
            assert torch.equal(back, codes), layout
            ref = TokenLayout(layout, codes.shape[0], size, offset).encode_item(codes)  # the same TokenLayout
            assert torch.equal(ids, ref)


def test_codebook_zero_first(codecs):
    codes = _codes(codecs, "mimi")
    n_q, frames = codes.shape
    size = int(codecs["mimi"].config.codebook_size)
    flat = family_tokens(codes, "mimi", "flatten", size).view(frames, n_q)
    assert torch.equal(flat[:, 0], codes[0])  # first token of each frame: the semantic codebook (unshifted)
    assert torch.equal(flat[:, 1] - size, codes[1])
    par = family_tokens(codes, "mimi", "parallel", size)
    assert torch.equal(par[0], codes[0])
    delay = family_tokens(codes, "mimi", "delay", size)
    assert torch.equal(delay[0, :frames], codes[0])  # stream 0, not delayed
    assert torch.equal(delay[1, 1 : frames + 1], codes[1])  # codebook 1 one step later
    whole = family_tokens(codes, "mimi", "codebook", size)
    assert torch.equal(whole[:frames], codes[0])  # codebook 0 first in the sequence, not per frame
    assert "codebook" not in FIRST_CODEBOOK_FIRST_PER_FRAME


def _snac24(frames: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 4096, (frames * k,), generator=g) for k in (1, 2, 4)]


def test_snac_orpheus_equals_snac_tokens():
    levels = _snac24(5)
    assert family_layouts("snac") == ["orpheus"]
    ids = family_tokens(levels, "snac", "orpheus", 4096)
    assert torch.equal(ids, snac_tokens.orpheus_flatten([c[None] for c in levels])[0])
    assert ids.shape == (35,)
    back = family_detokenize(ids, "snac", "orpheus", 4096)
    assert all(torch.equal(a, b) for a, b in zip(back, levels, strict=True))
    ids0 = family_tokens(levels, "snac", "orpheus", 4096, offset=0)
    assert torch.equal(ids0, snac_tokens.orpheus_flatten([c[None] for c in levels], offset=0)[0])


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: family_tokens(_snac24(2), "snac", "flatten", 4096),
            "does not apply to snac codes; use orpheus",
        ),
        (lambda: family_tokens(_snac24(2), "snac", "delay", 4096), "different frame rates"),
        (lambda: family_tokens(torch.zeros(2, 3, dtype=torch.long), "mimi", "orpheus", 2048), "use flatten"),
        (lambda: family_tokens(torch.zeros(2, 3, dtype=torch.long), "encodec", "flatten", 1024), "unknown"),
        (lambda: family_tokens(_snac24(2)[:2], "snac", "orpheus", 4096), "3 levels"),
        (lambda: family_detokenize(torch.tensor([5, 6]), "snac", "orpheus", 4096), "7 per frame"),
        (lambda: family_detokenize(torch.tensor([5000, 6]), "mimi", "flatten", 2048, 2), "outside"),
    ],
)
def test_wrong_layout_one_clean_error(call, message):
    with pytest.raises(TokenError, match=message):
        call()


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


@pytest.mark.parametrize("family", ["mimi", "dac"])
@pytest.mark.parametrize("layout", ["flatten", "delay"])
def test_cli_tokens_and_back(models, wav, tmp_path, family, layout):
    codes_file = tmp_path / "codes.npz"
    code, err = cli("encode", wav, codes_file, "-m", models[family])
    assert code == 0, err
    toks = tmp_path / "t.npz"
    code, err = cli("tokens", codes_file, "-l", layout, "--offset", "100", "--begin", "auto", "-o", toks)
    assert code == 0, err
    fc = load_family_codes(codes_file)

    tf = read_tokens(toks)
    assert tf.source["family"] == family and tf.source["model"] == str(models[family])
    assert torch.equal(tf.layout.decode(tf.ids, tf.attention_mask)[0][0], fc.codes)
    back = tmp_path / "back.npz"
    code, err = cli("detokenize", toks, back)
    assert code == 0, err
    assert _members(back) == _members(codes_file)  # the same codes file content, member by member
    assert_clean_error(cli("detokenize", toks, back), "exists")
    assert_clean_error(cli("detokenize", toks, tmp_path / "x.wav"), "then `rvqkit decode`")
    assert_clean_error(cli("tokens", codes_file, "-l", "orpheus"), "does not apply")
    # the first codebooks only: the codes file of those
    code, err = cli("tokens", codes_file, "--n-q", "1", "-o", tmp_path / "one.json")
    assert code == 0, err
    code, err = cli("detokenize", tmp_path / "one.json", tmp_path / "one.npz")
    assert code == 0, err
    assert torch.equal(load_family_codes(tmp_path / "one.npz").codes, fc.codes[:1])


def test_cli_snac(models, wav, tmp_path):
    small = tmp_path / "small.npz"  # the test SNAC model's levels are not the 24 kHz model's: refused
    assert cli("encode", wav, small, "-m", models["snac"])[0] == 0
    assert_clean_error(cli("tokens", small), "does not apply to snac codes")
    assert_clean_error(cli("tokens", small, "-l", "orpheus"), "SNAC 24 kHz codes of 4096 entries")
    levels = _snac24(4)
    fc = FamilyCodes("snac", levels, 4 * 2048, 24000, 1, 4096, 512, "hubertsiuzdak/snac_24khz", (4, 2, 1))
    path = tmp_path / "snac24.npz"
    save_family_codes(path, fc)
    out = tmp_path / "t.txt"
    code, err = cli("tokens", path, "-l", "orpheus", "-o", out)
    assert code == 0, err
    want = snac_tokens.orpheus_flatten([c[None] for c in levels])[0]
    assert out.read_text().split() == [str(i) for i in want.tolist()]
    assert_clean_error(cli("tokens", path, "-l", "orpheus", "-o", tmp_path / "t.npz"), ".txt only")
    res = CliRunner().invoke(app, ["tokens", str(path), "-l", "orpheus", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["family"] == "snac" and doc["ids"] == want.tolist()
    assert torch.equal(family_detokenize(torch.tensor(doc["ids"]), "snac", "orpheus", 4096)[2], levels[2])


def test_cli_tampered_family_facts(models, wav, tmp_path):
    codes_file = tmp_path / "codes.npz"
    assert cli("encode", wav, codes_file, "-m", models["dac"])[0] == 0
    toks = tmp_path / "t.json"
    assert cli("tokens", codes_file, "-o", toks)[0] == 0
    doc = json.loads(toks.read_text())
    assert doc["source"]["family"] == "dac" and doc["source"]["family_codes"]["n_q"] == doc["layout"]["n_q"]
    for edit, message in (
        ({"family": "snac"}, "source family must be 'mimi' or 'dac'"),
        ({"family_codes": None}, "source family must be 'mimi' or 'dac'"),
        ({"family_codes": {**doc["source"]["family_codes"], "hop_length": "x"}}, "malformed family codes"),
        ({"family_codes": {**doc["source"]["family_codes"], "codebook_size": 2}}, "codes"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**doc, "source": {**doc["source"], **edit}}))
        assert_clean_error(cli("detokenize", bad, tmp_path / "out.npz"), message)
        assert not (tmp_path / "out.npz").exists()
    del (
        doc["source"]["family"],
        doc["source"]["family_codes"],
    )  # a file without a family: EnCodec's, as before
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))

    assert read_tokens(old).source["family"] is None
