"""Mimi weights: both published formats round trip, moshi's key names and q/k layout, family detection,
and one clear WeightsError for each kind of wrong file. (No reference package needed.)"""

from __future__ import annotations

import json
import math

import pytest
import torch
from mimi_helpers import SMALL, SR, signal
from safetensors.torch import load_file, save_file

from rvqkit.errors import AudioError, BandwidthError, CodesError, WeightsError
from rvqkit.mimi import MimiConfig, load_mimi, looks_like_mimi, random_mimi, save_hf_folder, save_moshi_file
from rvqkit.mimi.loading import to_moshi_state_dict


@pytest.fixture(scope="module")
def model():
    return random_mimi(SMALL, seed=4)


@pytest.fixture(scope="module")
def hf_folder(model, tmp_path_factory):
    return save_hf_folder(model, tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def moshi_file(model, tmp_path_factory):
    return save_moshi_file(model, tmp_path_factory.mktemp("moshi") / "tokenizer.safetensors")


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trips(model, hf_folder, moshi_file):
    for path, fmt, config in ((hf_folder, "transformers", None), (moshi_file, "moshi", SMALL)):
        loaded, cfg = load_mimi(path, config=config)
        assert cfg == SMALL and same_state(loaded, model)
        assert loaded.loaded.format == fmt and len(loaded.loaded.sha256) == 64
    loaded, _ = load_mimi(
        hf_folder / "model.safetensors"
    )  # the weights file of a folder: its config beside it
    assert same_state(loaded, model)


def test_moshi_names_and_inferred_shape(model, moshi_file):
    """The names of moshi's published file (moshi's modules, as transformers' converter maps them), and
    the shape read back from the tensors alone (heads, window, RoPE base: the published ones)."""
    keys = set(load_file(str(moshi_file)))
    for key in (
        "encoder.model.0.conv.conv.weight",
        "encoder.model.1.block.1.conv.conv.weight",
        "encoder.model.3.conv.conv.bias",
        "decoder.model.2.convtr.convtr.weight",
        "decoder.model.14.conv.conv.weight",
        "downsample.conv.conv.conv.weight",
        "upsample.convtr.convtr.convtr.weight",
        "quantizer.rvq_first.vq.layers.0._codebook.embedding_sum",
        "quantizer.rvq_first.vq.layers.0._codebook.cluster_usage",
        "quantizer.rvq_rest.vq.layers.14._codebook.embedding_sum",
        "quantizer.rvq_first.input_proj.weight",
        "quantizer.rvq_rest.output_proj.weight",
        "encoder_transformer.transformer.layers.0.self_attn.in_proj_weight",
        "encoder_transformer.transformer.layers.1.self_attn.out_proj.weight",
        "decoder_transformer.transformer.layers.0.linear1.weight",
        "decoder_transformer.transformer.layers.0.linear2.weight",
        "decoder_transformer.transformer.layers.0.norm1.bias",
        "decoder_transformer.transformer.layers.1.norm2.weight",
        "encoder_transformer.transformer.layers.1.layer_scale_1.scale",
        "encoder_transformer.transformer.layers.1.layer_scale_2.scale",
    ):
        assert key in keys, key
    assert not any(
        "q_proj" in k or "semantic_residual" in k or k.startswith(("encoder.layers", "decoder.layers"))
        for k in keys
    )
    _, cfg = load_mimi(moshi_file)
    published_rest = {"num_attention_heads": 8, "head_dim": 4, "sliding_window": 250}
    assert cfg == MimiConfig(**{**SMALL.__dict__, **published_rest})


def _moshi_rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """moshi's rope.apply_rope (interleave=True): pairs (2i, 2i+1) rotated by pos * theta^(-2i/d)."""
    d = x.shape[-1]
    freqs = torch.exp(torch.arange(d // 2, dtype=torch.float32) * (-math.log(theta) * 2 / d))
    angle = pos[:, None].float() * freqs
    xr, xi = x.view(*x.shape[:-1], d // 2, 2).unbind(-1)
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([xr * c - xi * s, xr * s + xi * c], dim=-1).flatten(-2)


def test_moshi_qk_layout_gives_the_same_attention_scores(model):
    """moshi's fused in_proj with interleaved RoPE and rvqkit's permuted q/k with rotate-half RoPE give the
    same attention scores (the converter's permutation, checked numerically)."""
    raw = to_moshi_state_dict(model)
    layer = model.encoder_transformer.layers[0].self_attn
    fused = raw["encoder_transformer.transformer.layers.0.self_attn.in_proj_weight"]
    heads, hd = SMALL.num_attention_heads, SMALL.head_dim
    x = torch.randn(7, SMALL.hidden_size, generator=torch.Generator().manual_seed(0))
    pos = torch.arange(7)
    cos, sin = model.encoder_transformer.rotary(pos[None])
    with torch.no_grad():
        q_m, k_m, _ = (x @ fused.t()).chunk(3, dim=-1)
        q_m, k_m = (
            _moshi_rope(t.view(7, heads, hd).transpose(0, 1), pos, SMALL.rope_theta) for t in (q_m, k_m)
        )
        q_o, k_o = (p(x).view(7, heads, hd).transpose(0, 1) for p in (layer.q_proj, layer.k_proj))
        rot = [
            t * cos[0] + torch.cat((-t[..., hd // 2 :], t[..., : hd // 2]), -1) * sin[0] for t in (q_o, k_o)
        ]
    scores_moshi, scores_ours = q_m @ k_m.transpose(1, 2), rot[0] @ rot[1].transpose(1, 2)
    assert torch.allclose(scores_moshi, scores_ours, atol=1e-4, rtol=1e-4)


def test_looks_like_mimi(hf_folder, moshi_file, tmp_path):
    assert looks_like_mimi(hf_folder) and looks_like_mimi(moshi_file)
    (tmp_path / "encodec").mkdir()
    (tmp_path / "encodec" / "config.json").write_text(json.dumps({"model_type": "encodec"}))
    save_file({"encoder.layers.0.conv.weight": torch.zeros(2, 1, 7)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    for path in ("encodec", "other.safetensors", "junk.safetensors", "missing"):
        assert not looks_like_mimi(tmp_path / path)


def _folder_with(tmp_path, hf_folder, edit=None, config=None):
    folder = tmp_path / "edited"
    folder.mkdir()
    cfg = json.loads((hf_folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config(cfg) if config else cfg))
    tensors = load_file(str(hf_folder / "model.safetensors"))
    if edit:
        edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize(
    "edit, config, message",
    [
        (
            lambda t: t.pop("decoder.layers.14.conv.bias"),
            None,
            "missing tensor in .*decoder.layers.14.conv.bias",
        ),
        (
            lambda t: t.update({"encoder.extra.weight": torch.zeros(1)}),
            None,
            "unknown tensor in .*encoder.extra",
        ),
        (
            lambda t: t.update({"downsample.conv.weight": torch.zeros(3, 3, 4)}),
            None,
            r"downsample.conv.weight has shape \(3, 3, 4\)",
        ),
        (
            lambda t: t.pop("quantizer.acoustic_residual_vector_quantizer.layers.3.codebook.cluster_usage"),
            None,
            "missing tensor .*layers.3.cluster_usage",
        ),
        (None, lambda c: {**c, "model_type": "encodec"}, "not a Mimi config .*'encodec'"),
        (None, lambda c: {**c, "use_causal_conv": False}, "use_causal_conv=False"),
        (None, lambda c: {**c, "num_quantizers": 12}, "holds 15 acoustic codebooks, the config 11"),
    ],
)
def test_wrong_transformers_folder(tmp_path, hf_folder, edit, config, message):
    with pytest.raises(WeightsError, match=message):
        load_mimi(_folder_with(tmp_path, hf_folder, edit, config))


def test_wrong_files(tmp_path, hf_folder, moshi_file):
    cases = {}
    cases["missing"] = tmp_path / "nothing.safetensors"
    (tmp_path / "weights.pth").write_bytes(b"\x80\x04K\x01.")
    cases["pickle"] = tmp_path / "weights.pth"
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(moshi_file.read_bytes()[:5000])
    cases["truncated"] = trunc
    save_file({"model.embed.weight": torch.zeros(4, 4)}, str(tmp_path / "lm.safetensors"))
    cases["other"] = tmp_path / "lm.safetensors"
    no_cfg = tmp_path / "nocfg"
    no_cfg.mkdir()
    (no_cfg / "model.safetensors").write_bytes((hf_folder / "model.safetensors").read_bytes())
    cases["hf weights without config"] = no_cfg / "model.safetensors"
    cases["folder without config"] = tmp_path / "empty"
    (tmp_path / "empty").mkdir()
    bad_json = tmp_path / "badjson"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    cases["bad json"] = bad_json
    moshi = load_file(str(moshi_file))
    del moshi["encoder_transformer.transformer.layers.1.linear2.weight"]
    save_file(moshi, str(tmp_path / "moshi_missing.safetensors"))
    cases["moshi missing tensor"] = tmp_path / "moshi_missing.safetensors"
    for name, path in cases.items():
        with pytest.raises(WeightsError) as err:
            load_mimi(path, config=SMALL if "moshi" in name else None)
        assert str(path.name) in str(err.value) or "tensor" in str(err.value), (name, err.value)


def test_bad_inputs(model):
    x = signal("noise", SR // 2, seed=1)
    with pytest.raises(AudioError, match=r"\[batch, 1, samples\]"):
        model.encode(x[0])
    with pytest.raises(AudioError, match="floats"):
        model.encode(x.long())
    with pytest.raises(BandwidthError, match="n_q must be an integer from 1 to 16"):
        model.encode(x, 17)
    with pytest.raises(AudioError, match="lengths"):
        model.encode(x, 4, lengths=torch.tensor([SR]))
    codes = model.encode(x, 4)
    with pytest.raises(CodesError, match="out of range"):
        model.decode(codes + SMALL.codebook_size)
    with pytest.raises(CodesError, match="integers"):
        model.decode(codes.float())
    with pytest.raises(CodesError, match="codebooks"):
        model.decode(torch.zeros(1, 17, 3, dtype=torch.long))


#: moshi.models.loaders._mimi_config (kyutai-labs/moshi e6a55d2), as a repo's mimi_config JSON holds it.
MOSHI_MIMI_CONFIG = {
    "sample_rate": 24000,
    "channels": 1,
    "frame_rate": 12.5,
    "seanet": {
        "channels": 1,
        "dimension": 512,
        "causal": True,
        "n_filters": 64,
        "n_residual_layers": 1,
        "activation": "ELU",
        "compress": 2,
        "dilation_base": 2,
        "disable_norm_outer_blocks": 0,
        "kernel_size": 7,
        "residual_kernel_size": 3,
        "last_kernel_size": 3,
        "norm": "none",
        "pad_mode": "constant",
        "ratios": [8, 6, 5, 4],
        "true_skip": True,
    },
    "quantizer": {"dimension": 256, "n_q": 32, "bins": 2048, "input_dimension": 512, "output_dimension": 512},
    "transformer": {
        "d_model": 512,
        "num_heads": 8,
        "num_layers": 8,
        "causal": True,
        "layer_scale": 0.01,
        "context": 250,
        "conv_layout": True,
        "max_period": 10000,
        "gating": "none",
        "norm": "layer_norm",
        "positional_embedding": "rope",
        "dim_feedforward": 2048,
        "input_dimension": 512,
        "output_dimensions": [512],
    },
}


def test_moshi_config_format():
    assert MimiConfig.from_moshi_config(MOSHI_MIMI_CONFIG) == MimiConfig()
    bad = {**MOSHI_MIMI_CONFIG, "transformer": {**MOSHI_MIMI_CONFIG["transformer"], "gating": "silu"}}
    with pytest.raises(WeightsError, match="transformer.gating='silu'"):
        MimiConfig.from_moshi_config(bad)
    with pytest.raises(WeightsError, match="malformed moshi Mimi config"):
        MimiConfig.from_moshi_config({"seanet": {}})
