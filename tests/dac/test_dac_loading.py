"""DAC loading: descript's .pth and transformers folders round trip; damaged, foreign and wrong files
give one WeightsError naming the problem; configs map between the formats."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rvqkit.dac import (
    DAC_16KHZ,
    DAC_24KHZ,
    DAC_44KHZ,
    DAC_44KHZ_16KBPS,
    DacConfig,
    DacModel,
    load_dac,
    looks_like_dac,
    random_dac,
    save_dac_hf,
    save_dac_pth,
)
from rvqkit.errors import WeightsError

TINY = DacConfig(
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


@pytest.fixture(scope="module")
def tiny() -> DacModel:
    return random_dac(TINY, seed=0)


@pytest.fixture
def pth(tiny, tmp_path) -> Path:
    return save_dac_pth(tiny, tmp_path / "weights.pth")


def _package(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _same_weights(a: DacModel, b: DacModel, atol: float = 0.0) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k], sb[k], rtol=0, atol=atol), k


def test_pth_layout_is_descripts(pth):
    package = _package(pth)
    assert set(package) == {"state_dict", "metadata"}
    kwargs = package["metadata"]["kwargs"]
    assert kwargs["encoder_rates"] == [2, 4, 5, 8] and kwargs["sample_rate"] == 16000
    keys = package["state_dict"].keys()
    assert "encoder.block.0.weight_g" in keys and "encoder.block.0.weight_v" in keys
    assert "encoder.block.1.block.0.block.1.weight_v" in keys  # first residual unit's dilated conv
    assert "encoder.block.1.block.3.alpha" in keys and "encoder.block.6.weight_g" in keys
    assert "decoder.model.1.block.1.weight_g" in keys  # the first transposed convolution
    assert "decoder.model.1.block.4.block.3.bias" in keys and "decoder.model.6.weight_v" in keys
    assert (
        "quantizer.quantizers.2.in_proj.weight_g" in keys and "quantizer.quantizers.2.codebook.weight" in keys
    )
    assert not any(k.endswith(".weight") and "codebook" not in k for k in keys)


def test_pth_round_trip(tiny, pth):
    model, cfg = load_dac(pth)
    assert cfg == DacConfig(**{**TINY.__dict__, "name": "weights"})
    _same_weights(model, tiny, atol=1e-6)  # g * v / ||v|| rounds within an ulp or two of w
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training


def test_hf_folder_round_trip(tiny, tmp_path):
    folder = save_dac_hf(tiny, tmp_path / "hf")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "dac"
    for path in (folder, folder / "config.json", folder / "model.safetensors"):
        model, cfg = load_dac(path)
        _same_weights(model, tiny)
        assert cfg.hop_length == 320 and cfg.num_codebooks == 3


def test_hf_folder_with_weight_norm_parametrizations(tiny, tmp_path):
    """A folder saved from a model with weight norm applied (``parametrizations.weight.original0/1``)."""
    folder = save_dac_hf(tiny, tmp_path / "hf")
    ours = {}
    for k, v in tiny.state_dict().items():
        module = k.rpartition(".")[0]
        if k.endswith(".weight") and "codebook" not in k:
            ours[f"{module}.parametrizations.weight.original0"] = torch.norm_except_dim(v, 2, 0)
            ours[f"{module}.parametrizations.weight.original1"] = v.clone()
        else:
            ours[k] = v.clone()
    save_file(ours, str(folder / "model.safetensors"))
    model, _ = load_dac(folder)
    _same_weights(model, tiny, atol=1e-6)


def test_16kbps_model_has_no_transformers_form(tmp_path):
    with pytest.raises(WeightsError, match="latent_dim 128"):
        DAC_44KHZ_16KBPS.to_hf_config()


def test_presets():
    assert (DAC_44KHZ.hop_length, DAC_24KHZ.hop_length, DAC_16KHZ.hop_length) == (512, 320, 320)
    assert DAC_44KHZ.frame_rate == pytest.approx(86.1328125)
    assert DAC_24KHZ.bitrate_kbps(32) == pytest.approx(24.0)
    assert DAC_16KHZ.bitrate_kbps(12) == pytest.approx(6.0)
    assert DAC_44KHZ_16KBPS.bitrate_kbps(18) == pytest.approx(15.50390625)
    assert DAC_44KHZ.latent_dim == 1024 and DAC_44KHZ_16KBPS.latent_dim == 128
    for cfg in (DAC_44KHZ, DAC_24KHZ, DAC_16KHZ):
        assert DacConfig.from_hf_config(cfg.to_hf_config(), name=cfg.name) == cfg
    for cfg in (DAC_44KHZ, DAC_24KHZ, DAC_16KHZ, DAC_44KHZ_16KBPS):
        assert DacConfig.from_dac_kwargs(cfg.to_dac_kwargs(), name=cfg.name) == cfg
        assert not cfg.causal and cfg.channels == 1


def test_dac_kwargs_defaults_and_latent():
    """Missing kwargs take DAC's constructor defaults; latent_dim None is encoder_dim * 2**len(rates)."""
    cfg = DacConfig.from_dac_kwargs({"sample_rate": 44100, "latent_dim": None})
    assert cfg == DacConfig(name="dac")
    with pytest.raises(WeightsError, match="codebook_dim per codebook"):
        DacConfig.from_dac_kwargs({"codebook_dim": [8, 4]})
    with pytest.raises(WeightsError, match="encoder_rates"):
        DacConfig.from_dac_kwargs({"encoder_rates": "2,4"})


def test_frames_and_decoded_length(tiny):
    for n in (1, 319, 320, 321, 16000, 16001):
        assert tiny.frames_for_length(n) == -(-n // 320)
        codes = tiny.encode(torch.zeros(1, 1, n))
        assert codes.shape == (1, 3, tiny.frames_for_length(n))
        assert (
            tiny.decode(codes).shape[-1] == tiny.decoded_length(codes.shape[-1]) == 320 * codes.shape[-1] - 8
        )
        assert tiny.decode(codes, n).shape == (1, 1, n)


def test_looks_like_dac(tiny, pth, tmp_path):
    folder = save_dac_hf(tiny, tmp_path / "hf")
    assert looks_like_dac(pth) and looks_like_dac(folder) and looks_like_dac(folder / "model.safetensors")
    other = tmp_path / "encodec"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "encodec"}))
    plain = tmp_path / "plain.pth"
    torch.save({"a": torch.zeros(2)}, plain)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip")
    for path in (other, plain, junk, tmp_path / "missing.pth", tmp_path):
        assert not looks_like_dac(path), path


# -- errors -----------------------------------------------------------------------------------------------
def _edited(pth: Path, tmp_path: Path, edit) -> Path:
    package = _package(pth)
    edit(package)
    out = tmp_path / "edited.pth"
    torch.save(package, out)
    return out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["state_dict"].pop("decoder.model.6.bias"), "missing tensor in .*decoder.conv2.bias"),
        (lambda p: p["state_dict"].pop("encoder.block.0.weight_v"), "weight_v is missing"),
        (
            lambda p: p["state_dict"].update({"encoder.extra.weight": torch.zeros(1)}),
            "unknown tensor .*encoder.extra",
        ),
        (
            lambda p: p["state_dict"].update({"quantizer.quantizers.0.codebook.weight": torch.zeros(64, 4)}),
            "codebook.weight has shape \\(64, 4\\)",
        ),
        (lambda p: p["metadata"].pop("kwargs"), "no metadata\\['kwargs'\\]"),
        (lambda p: p["metadata"]["kwargs"].update({"n_codebooks": 4}), "missing tensor .*quantizers.3"),
        (lambda p: p["metadata"]["kwargs"].update({"encoder_rates": [2, 4, 8]}), "shape|unknown tensor"),
        (
            lambda p: p["state_dict"].update({"encoder.block.0.bias": torch.zeros(4, dtype=torch.long)}),
            "dtype",
        ),
    ],
)
def test_wrong_pth_is_one_weights_error(pth, tmp_path, edit, message):
    with pytest.raises(WeightsError, match=message):
        load_dac(_edited(pth, tmp_path, edit))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_damaged_and_foreign_files(pth, tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(pth.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="cannot read DAC weights"):
        load_dac(truncated)
    code = tmp_path / "code.pth"  # a pickle that would run code: weights_only refuses it
    code.write_bytes(pickle.dumps(print))
    with pytest.raises(WeightsError, match="cannot read DAC weights"):
        load_dac(code)
    plain = tmp_path / "plain.pth"  # a bare state dict (EnCodec's Meta .th layout)
    torch.save({"encoder.model.0.conv.conv.weight": torch.zeros(1)}, plain)
    with pytest.raises(WeightsError, match="not a DAC .pth"):
        load_dac(plain)
    no_quantizer = tmp_path / "nq.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "metadata": {"kwargs": {}}}, no_quantizer)
    with pytest.raises(WeightsError, match="not a DAC checkpoint"):
        load_dac(no_quantizer)
    with pytest.raises(WeightsError, match="no such DAC weights"):
        load_dac(tmp_path / "missing.pth")


def test_bad_hf_folders(tiny, tmp_path):
    folder = save_dac_hf(tiny, tmp_path / "hf")
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="cannot read DAC weights"):
        load_dac(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="no model.safetensors or pytorch_model.bin"):
        load_dac(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="cannot parse"):
        load_dac(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "encodec"}))
    with pytest.raises(WeightsError, match="not a DAC model"):
        load_dac(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "dac", "codebook_size": 1000}))
    with pytest.raises(WeightsError, match="power of 2"):
        load_dac(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="no config.json"):
        load_dac(empty)
