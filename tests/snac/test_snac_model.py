"""rvqkit's SNAC on its own (no reference needed): configs and presets, lengths and padding, per-item
encoding of variable-length batches, deterministic and seeded decoding, and one clear error per bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from snac_helpers import SMALL_ATTN, SMALL_PLAIN, signals

from rvqkit.errors import AudioError, CodesError, WeightsError
from rvqkit.snac import PRESETS, SnacConfig, SnacModel, random_snac


@pytest.fixture(scope="module")
def model() -> SnacModel:
    return random_snac(SMALL_ATTN, seed=1)


@pytest.fixture(scope="module")
def plain() -> SnacModel:
    return random_snac(SMALL_PLAIN, seed=2)


# -- configs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "pad", "levels", "kbps", "params"),
    [
        ("snac_24khz", 2048, 3, 0.98, 19.8),
        ("snac_32khz", 12288, 4, 1.9, 54.5),
        ("snac_44khz", 12288, 4, 2.6, 54.5),
    ],
)
def test_presets(name, pad, levels, kbps, params):
    """The published models' figures (model cards: bitrate, parameters; padding multiple as snac's
    preprocess computes it). Weight norm's magnitudes are folded away: one number per output channel."""
    cfg = PRESETS[name]
    assert cfg.pad_multiple == pad and cfg.num_codebooks == levels and cfg.channels == 1
    assert not cfg.causal and cfg.codebook_size == 4096
    assert round(cfg.bitrate / 1000, 2 if kbps < 1 else 1) == kbps
    assert cfg.frame_rates[-1] == cfg.frame_rate == cfg.sampling_rate / cfg.hop_length
    with torch.device("meta"):
        m = SnacModel(cfg)
    folded = sum(
        mod.weight.shape[0]
        for mod in m.modules()
        if isinstance(mod, torch.nn.Conv1d | torch.nn.ConvTranspose1d)
    )
    assert round((sum(p.numel() for p in m.parameters()) + folded) / 1e6, 1) == params


def test_config_round_trip_and_defaults():
    for cfg in [*PRESETS.values(), SMALL_ATTN, SMALL_PLAIN]:
        assert SnacConfig.from_snac_config(cfg.to_snac_config()) == cfg
    # missing keys take snac.SNAC.__init__'s defaults, as SNAC(**config) does
    default = SnacConfig.from_snac_config({})
    assert (
        default.sampling_rate == 44100
        and default.encoder_rates == (3, 3, 7, 7)
        and default.attn_window_size == 32
    )
    assert SnacConfig.from_hf_config({"latent_dim": None}) == default


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ([1, 2], "not a JSON object"),
        ({"model_type": "encodec"}, "transformers config"),
        ({"sample_rate": 24000}, "unknown field 'sample_rate'"),
        ({"encoder_rates": 8}, "encoder_rates must be a list"),
        ({"encoder_rates": []}, "encoder_rates must be a non-empty list"),
        ({"vq_strides": [4, 0]}, "vq_strides"),
        ({"sampling_rate": "24k"}, "sampling_rate must be a positive integer"),
        ({"codebook_size": True}, "codebook_size"),
        ({"latent_dim": 100}, "latent_dim 100"),
        ({"attn_window_size": 0}, "attn_window_size"),
        ({"encoder_dim": 4, "encoder_rates": [2, 2]}, "multiple of 64"),
        ({"noise": "yes"}, "true or false"),
    ],
)
def test_config_errors(cfg, message):
    with pytest.raises(WeightsError, match=message):
        SnacConfig.from_snac_config(cfg)


# -- lengths, padding, per-item batches -------------------------------------------------------------
def test_lengths_match_encode(model, plain):
    for m in (model, plain):
        cfg = m.config
        for n in (1, cfg.pad_multiple - 1, cfg.pad_multiple, cfg.pad_multiple + 1, 3 * cfg.pad_multiple + 7):
            codes = m.encode(torch.randn(1, 1, n) * 0.1)
            assert [c.shape[-1] for c in codes] == m.level_frames(n)
            assert codes[-1].shape[-1] == m.frames_for_length(n) == m.padded_length(n) // cfg.hop_length
            assert m.padded_length(n) % cfg.pad_multiple == 0 and m.padded_length(n) - n < cfg.pad_multiple
            assert m.decode(codes).shape == (1, 1, m.padded_length(n))


def test_encode_items_each_as_alone(model):
    """Each item of a variable-length batch gets exactly its codes when encoded alone (one model call per
    item, at the item's own padded length)."""
    sr = model.config.sampling_rate
    items = [s[0, 0, :n] for s, n in zip(signals(sr, 1.0, seed=1).values(), (16000, 5011, 9001), strict=True)]
    per_item = model.encode_items(items)
    for item, codes in zip(items, per_item, strict=True):
        alone = model.encode(item.view(1, 1, -1))
        assert len(codes) == len(alone)
        for c, a in zip(codes, alone, strict=True):
            assert torch.equal(c, a[0])
    audio = model.decode_items(per_item, lengths=[x.shape[-1] for x in items])
    assert [a.shape for a in audio] == [(1, x.shape[-1]) for x in items]
    with pytest.raises(AudioError, match="item 1"):
        model.encode_items([items[0], torch.zeros(2, 100)])
    with pytest.raises(CodesError, match="lengths has 1 entries for 3 items"):
        model.decode_items(per_item, lengths=[5])


# -- decoding and noise -------------------------------------------------------------------------------
def test_noise_off_is_deterministic_and_seeded_is_reproducible(model, plain):
    x = signals(model.config.sampling_rate, 0.6, seed=2)["chirp"]
    codes = model.encode(x)
    off = model.decode(codes)
    assert torch.equal(off, model.decode(codes))
    torch.manual_seed(3)
    seeded = model.decode(codes, noise="seeded")
    assert torch.equal(seeded, model.decode(codes, noise="seeded", generator=3))
    assert torch.equal(
        seeded, model.decode(codes, noise="seeded", generator=torch.Generator().manual_seed(3))
    )
    assert not torch.equal(seeded, model.decode(codes, noise="seeded", generator=4))
    assert (seeded - off).abs().max() > 1e-3  # the noise is there, and "off" leaves it out
    # a model without NoiseBlocks decodes the same whatever the noise mode
    pc = plain.encode(x)
    assert torch.equal(plain.decode(pc), plain.decode(pc, noise="seeded", generator=1))


def test_prefix_levels_decode(model):
    codes = model.encode(signals(model.config.sampling_rate, 0.5, seed=4)["sine"])
    full = model.decode(codes)
    for n in range(1, len(codes)):
        part = model.decode(codes[:n])
        assert part.shape == full.shape and torch.isfinite(part).all()
    assert model.decode(codes, length=1000).shape == (1, 1, 1000)
    for bad in (-1, 2.5, True):
        with pytest.raises(AudioError, match="length must be an integer >= 0"):
            model.decode(codes, length=bad)


def test_audio_errors(model):
    good = torch.zeros(1, 1, 100)
    cases = [
        (torch.zeros(100), "tensor \\[batch, 1, samples\\]"),
        (torch.zeros(1, 2, 100), "SNAC is mono"),
        ([0.0] * 10, "got list"),
        (torch.zeros(1, 1, 100, dtype=torch.int16), "floating point"),
        (torch.zeros(1, 1, 0), "empty"),
        (torch.full((1, 1, 10), float("nan")), "NaN"),
    ]
    for x, message in cases:
        with pytest.raises(AudioError, match=message):
            model.encode(x)
    for n_q in (0, 5, 1.5, True):
        with pytest.raises(CodesError, match="n_q must be an integer from 1 to 4"):
            model.encode(good, n_q=n_q)


def test_codes_errors(model):
    codes = model.encode(torch.randn(1, 1, 2000) * 0.1)
    bad_range = [c.clone() for c in codes]
    bad_range[1][0, 0] = model.config.codebook_size
    cases = [
        (codes[0], "list of 1 to 4 levels"),
        ([], "list of 1 to 4 levels"),
        ([*codes, codes[-1]], "got 5 levels"),
        ([codes[0].float(), *codes[1:]], "level 0 must be an integer tensor"),
        ([codes[0], codes[1][:, :-1], *codes[2:]], "level 1 has shape"),
        ([codes[0], codes[1], codes[2].repeat(2, 1), codes[3]], "level 2 has shape"),
        (bad_range, "level 1 has values outside 0..255"),
        ([c[:, :0] for c in codes], "empty"),
    ]
    for value, message in cases:
        with pytest.raises(CodesError, match=message):
            model.decode(value)
    with pytest.raises(ValueError, match='noise must be "off" or "seeded"'):
        model.decode(codes, noise="on")
    with pytest.raises(ValueError, match='only used with noise="seeded"'):
        model.decode(codes, generator=1)
    with pytest.raises(ValueError, match="generator must be"):
        model.decode(codes, noise="seeded", generator="1")


def test_codes_must_fill_attention_windows():
    """With a window (8 frames) longer than the coarsest stride (4), codes must cover whole windows."""
    m = random_snac(dataclasses.replace(SMALL_ATTN, attn_window_size=8), seed=5)
    assert m.config.pad_multiple == 8 * m.config.hop_length
    codes = m.encode(torch.randn(1, 1, 3000) * 0.1)
    strides = m.config.vq_strides
    assert m.decode([c[:, : 16 // s] for c, s in zip(codes, strides, strict=True)]).shape[-1] == 16 * 12
    with pytest.raises(CodesError, match="multiple of 8 finest frames \\(the attention window\\), got 12"):
        m.decode([c[:, : 12 // s] for c, s in zip(codes, strides, strict=True)])
