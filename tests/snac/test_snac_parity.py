"""rvqkit's SNAC against the snac package (1.2.1): random weights made and saved by snac's own model in
its published format, loaded through rvqkit's loader. Codes identical on every level; audio within 1e-4,
with snac's decoder noise stubbed out (rvqkit's noise="off") and with the same seeded noise on both sides
(torch.manual_seed before each call, rvqkit's noise="seeded")."""

from __future__ import annotations

import pytest
import torch
from snac_helpers import (
    SMALL_ATTN,
    SMALL_PLAIN,
    SNAC_SKIP,
    reference_model,
    save_reference,
    signals,
    stub_reference_noise,
)

from rvqkit.snac import PRESETS, load_snac, random_snac, save_snac, snac_state_dict

snac = pytest.importorskip("snac", reason=SNAC_SKIP)

CONFIGS = {"small-attn": SMALL_ATTN, "small-plain": SMALL_PLAIN, "snac_24khz": PRESETS["snac_24khz"]}
SECONDS = {"small-attn": 1.7, "small-plain": 1.3, "snac_24khz": 1.0}  # lengths are made odd: no hop multiple


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(name, snac reference, rvqkit model loaded from the reference's saved checkpoint)."""
    name = request.param
    config = CONFIGS[name]
    ref = reference_model(config, seed=11)
    folder = save_reference(ref, config, tmp_path_factory.mktemp(name))
    model, loaded = load_snac(folder)
    assert loaded == config
    return name, ref, model


def _codes_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x.shape == y.shape and x.dtype == y.dtype == torch.int64, i
        assert torch.equal(x, y), f"level {i}: {int((x != y).sum())} of {x.numel()} codes differ"


def test_codes_and_audio(pair, monkeypatch):
    name, ref, model = pair
    cfg = model.config
    full_size = name.startswith("snac_")  # the real config: fewer decodes, to keep the test quick
    for sig_name, x in signals(cfg.sampling_rate, SECONDS[name], seed=3).items():
        with torch.inference_mode():
            ref_codes = ref.encode(x)
        codes = model.encode(x)
        _codes_equal(codes, ref_codes)
        assert max(len(c.unique()) for c in codes) > 5, "random weights must use many codes"
        assert codes[-1].shape[-1] == model.frames_for_length(x.shape[-1])
        if full_size and sig_name != "chirp":
            continue
        # seeded noise: the same generator state on both sides gives the reference's noisy audio
        for seed in (0,) if full_size else (0, 7):
            torch.manual_seed(seed)
            with torch.inference_mode():
                ref_audio = ref.decode(ref_codes)
            torch.manual_seed(seed)
            audio = model.decode(codes, noise="seeded")
            assert audio.shape == ref_audio.shape, sig_name
            assert (audio - ref_audio).abs().max() <= 1e-4, (sig_name, seed)
        # an integer seed is a fresh generator seeded with it: the same noise as torch.manual_seed
        assert torch.equal(model.decode(codes, noise="seeded", generator=seed), audio)
        if cfg.noise:  # the noise is real: another seed gives other audio
            assert (model.decode(codes, noise="seeded", generator=seed + 1) - audio).abs().max() > 1e-3
    # noise off: the reference with its NoiseBlocks stubbed out
    stub_reference_noise(monkeypatch)
    for sig_name, x in signals(cfg.sampling_rate, SECONDS[name], seed=4).items():
        if full_size and sig_name != "noise":
            continue
        codes = model.encode(x)
        with torch.inference_mode():
            ref_audio = ref.decode(codes)
            ref_trimmed, _ = ref(x)
        audio = model.decode(codes)
        assert (audio - ref_audio).abs().max() <= 1e-4
        # snac's forward (encode, decode, trim) against decode(encode(x), length=...)
        assert (model.decode(codes, length=x.shape[-1]) - ref_trimmed).abs().max() <= 1e-4


def test_padded_batch_same_as_reference(pair):
    """A batch right-padded as one gives the reference's batch codes (same padding, same shapes)."""
    _, ref, model = pair
    sr = model.config.sampling_rate
    items = list(signals(sr, 0.9, seed=5).values())
    x = torch.cat(items, dim=0)
    with torch.inference_mode():
        ref_codes = ref.encode(x)
    _codes_equal(model.encode(x), ref_codes)


def test_prefix_levels_encode(pair):
    _, ref, model = pair
    x = signals(model.config.sampling_rate, 0.8, seed=6)["chirp"]
    with torch.inference_mode():
        ref_codes = ref.encode(x)
    for n_q in range(1, model.config.num_codebooks + 1):
        _codes_equal(model.encode(x, n_q=n_q), ref_codes[:n_q])


def test_weight_g_key_style(tmp_path):
    """The older weight_g / weight_v keys load to the same model as the parametrizations keys."""
    ref = reference_model(SMALL_ATTN, seed=12)
    model_p, _ = load_snac(save_reference(ref, SMALL_ATTN, tmp_path / "p"))
    model_g, _ = load_snac(save_reference(ref, SMALL_ATTN, tmp_path / "g", key_style="weight_g"))
    for (k, a), (k2, b) in zip(model_p.state_dict().items(), model_g.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    # and torch's own compat hook loads them into snac too (the reference reads both styles)
    again = snac.SNAC.from_pretrained(str(tmp_path / "g"))
    x = signals(SMALL_ATTN.sampling_rate, 0.7, seed=8)["noise"]
    with torch.inference_mode():
        _codes_equal(model_g.encode(x), again.encode(x))


@pytest.mark.parametrize("key_style", ["parametrizations", "weight_g"])
def test_reference_loads_rvqkit_checkpoints(tmp_path, key_style):
    """snac's own from_pretrained reads what save_snac(snac_state_dict(...)) writes; same codes."""
    model = random_snac(SMALL_ATTN, seed=3)
    save_snac(tmp_path, snac_state_dict(model, key_style), SMALL_ATTN)
    ref = snac.SNAC.from_pretrained(str(tmp_path))
    ours, _ = load_snac(tmp_path)
    for x in signals(SMALL_ATTN.sampling_rate, 1.1, seed=9).values():
        with torch.inference_mode():
            ref_codes = ref.encode(x)
        _codes_equal(ours.encode(x), ref_codes)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["snac_32khz", "snac_44khz"])
def test_full_size_music_models(name, tmp_path, monkeypatch):
    """The 32 and 44.1 kHz architectures at full size (54.5M parameters; ~30 s each on 2 cores)."""
    config = PRESETS[name]
    ref = reference_model(config, seed=13)
    model, _ = load_snac(save_reference(ref, config, tmp_path))
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in model.parameters()) + sum(
        m.weight.shape[0] for m in ref.modules() if hasattr(m, "parametrizations")
    )
    x = signals(config.sampling_rate, 1.0, seed=2)["chirp"]
    with torch.inference_mode():
        ref_codes = ref.encode(x)
    codes = model.encode(x)
    _codes_equal(codes, ref_codes)
    torch.manual_seed(0)
    with torch.inference_mode():
        ref_audio = ref.decode(ref_codes)
    torch.manual_seed(0)
    assert (model.decode(codes, noise="seeded") - ref_audio).abs().max() <= 1e-4
