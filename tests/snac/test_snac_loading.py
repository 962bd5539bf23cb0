"""Loading SNAC checkpoints (config.json + pytorch_model.bin, or model.safetensors): the forms a path can
take, both weight-norm key styles, and one WeightsError for each kind of wrong or corrupt file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from snac_helpers import SMALL_ATTN, SMALL_PLAIN

from rvqkit.errors import WeightsError
from rvqkit.snac import PRESETS, load_snac, looks_like_snac, random_snac, save_snac, snac_state_dict


@pytest.fixture(scope="module")
def source():
    return random_snac(SMALL_ATTN, seed=4)


@pytest.fixture()
def folder(source, tmp_path) -> Path:
    return save_snac(tmp_path / "ckpt", snac_state_dict(source), SMALL_ATTN)


def _same_weights(a, b, exact: bool = True) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        if exact:
            assert torch.equal(sa[k], sb[k]), k
        else:  # g * v / |v| with g = |v|: the weight again, to rounding
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-6, atol=1e-7, msg=k)


@pytest.mark.parametrize("key_style", ["parametrizations", "weight_g"])
def test_save_and_load_round_trip(source, tmp_path, key_style):
    path = save_snac(tmp_path, snac_state_dict(source, key_style), SMALL_ATTN)
    assert json.loads((path / "config.json").read_text()) == SMALL_ATTN.to_snac_config()
    raw = torch.load(path / "pytorch_model.bin", weights_only=True)
    g_keys = [k for k in raw if k.endswith(("original0", "weight_g"))]
    assert g_keys and all(("original0" in k) == (key_style == "parametrizations") for k in g_keys)
    model, config = load_snac(path)
    assert config == SMALL_ATTN and not model.training
    _same_weights(model, source, exact=False)


def test_path_forms(folder):
    """The folder, its weights file and its config.json all name the same checkpoint."""
    ref, _ = load_snac(folder)
    for p in (folder / "pytorch_model.bin", folder / "config.json", str(folder)):
        _same_weights(load_snac(p)[0], ref)


def test_safetensors(folder, tmp_path):
    ref, _ = load_snac(folder)
    out = tmp_path / "st"
    out.mkdir()
    (out / "config.json").write_bytes((folder / "config.json").read_bytes())
    save_file(torch.load(folder / "pytorch_model.bin", weights_only=True), str(out / "model.safetensors"))
    _same_weights(load_snac(out)[0], ref)


def test_missing_rotary_buffer_is_filled(folder, tmp_path):
    """rel_pos.inv_freq is a constant; a checkpoint saved without it still loads, to the same model."""
    raw = torch.load(folder / "pytorch_model.bin", weights_only=True)
    save_snac(tmp_path, {k: v for k, v in raw.items() if not k.endswith("inv_freq")}, SMALL_ATTN)
    _same_weights(load_snac(tmp_path)[0], load_snac(folder)[0])


def _rewrite(folder: Path, edit) -> None:
    raw = torch.load(folder / "pytorch_model.bin", weights_only=True)
    edit(raw)
    torch.save(raw, folder / "pytorch_model.bin")


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "pytorch_model.bin").write_bytes(b"\x00garbage" * 100), "cannot read weights"),
        (
            lambda f: (f / "pytorch_model.bin").write_bytes((f / "pytorch_model.bin").read_bytes()[:5000]),
            "cannot read weights",
        ),
        (
            lambda f: (f / "pytorch_model.bin").write_bytes(pickle.dumps({"a": Evil()}, protocol=2)),
            "cannot read weights",
        ),
        (lambda f: torch.save([1, 2, 3], f / "pytorch_model.bin"), "does not hold a state dict"),
        (lambda f: (f / "pytorch_model.bin").unlink(), "has no pytorch_model.bin or model.safetensors"),
        (lambda f: (f / "config.json").unlink(), "has no config.json"),
        (lambda f: (f / "config.json").write_text("{not json"), "cannot read .*config.json"),
        (
            lambda f: (f / "config.json").write_text(json.dumps({"model_type": "encodec"})),
            "not a SNAC config .*transformers config",
        ),
        (
            lambda f: (f / "config.json").write_text(json.dumps(SMALL_PLAIN.to_snac_config())),
            "(unknown tensor|has shape)",
        ),
        (
            lambda f: _rewrite(f, lambda r: r.pop("decoder.model.0.bias")),
            "missing tensor in weights: decoder.model.0.bias",
        ),
        (lambda f: _rewrite(f, lambda r: r.update(extra=torch.zeros(1))), "unknown tensor in weights: extra"),
        (
            lambda f: _rewrite(f, lambda r: r.pop("encoder.block.0.parametrizations.weight.original1")),
            "encoder.block.0.weight has no direction",
        ),
        (
            lambda f: _rewrite(
                f, lambda r: r.update({"quantizer.quantizers.0.codebook.weight": torch.zeros(3, 8)})
            ),
            "quantizer.quantizers.0.codebook.weight has shape \\(3, 8\\)",
        ),
        (
            lambda f: _rewrite(f, lambda r: r["decoder.model.0.bias"].fill_(float("nan"))),
            "decoder.model.0.bias holds NaN",
        ),
    ],
)
def test_bad_checkpoints(folder, damage, message, capsys):
    damage(folder)
    with pytest.raises(WeightsError, match=message):
        load_snac(folder)
    assert "pickled code ran" not in capsys.readouterr().out


def test_bad_paths(tmp_path):
    with pytest.raises(WeightsError, match="no such file or folder, and not a SNAC hub id"):
        load_snac(tmp_path / "nothing")
    with pytest.raises(WeightsError, match="has no pytorch_model.bin"):
        load_snac(tmp_path)


def test_looks_like_snac(folder, tmp_path):
    assert looks_like_snac(folder) and looks_like_snac(folder / "pytorch_model.bin")
    assert looks_like_snac("hubertsiuzdak/snac_24khz") and looks_like_snac("snac_44khz")
    assert not looks_like_snac(tmp_path / "nothing") and not looks_like_snac("facebook/encodec_24khz")
    other = tmp_path / "encodec"
    other.mkdir()
    (other / "pytorch_model.bin").write_bytes(b"")
    for cfg in (
        {"model_type": "encodec", "vq_strides": [1]},
        {"sampling_rate": 24000},
        [1],
        {"vq_strides": "x"},
    ):
        (other / "config.json").write_text(json.dumps(cfg))
        assert not looks_like_snac(other), cfg
    (other / "config.json").write_text("{broken")
    assert not looks_like_snac(other)


def test_save_keeps_existing_files(folder, source):
    before = (folder / "pytorch_model.bin").read_bytes()
    with pytest.raises(WeightsError, match="exists; pass overwrite=True"):
        save_snac(folder, snac_state_dict(source), SMALL_ATTN)
    assert (folder / "pytorch_model.bin").read_bytes() == before
    save_snac(folder, snac_state_dict(source), SMALL_ATTN, overwrite=True)


def test_random_models_are_seeded():
    a, b = random_snac(SMALL_PLAIN, seed=1), random_snac(SMALL_PLAIN, seed=1)
    _same_weights(a, b)
    c = random_snac(SMALL_PLAIN, seed=2)
    assert not torch.equal(
        a.quantizer.quantizers[0].codebook.weight, c.quantizer.quantizers[0].codebook.weight
    )
    state = torch.random.get_rng_state()
    random_snac(SMALL_PLAIN, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    assert PRESETS["snac_24khz"].name == "snac_24khz"
