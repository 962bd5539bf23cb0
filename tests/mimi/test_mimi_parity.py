"""Mimi parity with transformers' ``MimiModel`` (5.24): random weights saved in transformers' format (by
rvqkit, and by transformers' own ``save_pretrained``) and in moshi's single-file format, loaded through
rvqkit's loader and through the reference; codes identical, audio within 1e-4.

moshi itself is not installed beside this torch (moshi 0.2.13 needs torch<2.10), so the moshi format is
checked by names and by a round trip to the same weights (tests/test_mimi_loading.py).
"""

from __future__ import annotations

import pytest
import torch
from mimi_helpers import KINDS, SMALL, SR, signal

from rvqkit.mimi import KYUTAI_MIMI, MimiConfig, load_mimi, random_mimi, save_hf_folder, save_moshi_file
from rvqkit.mimi.loading import _moshi_config, to_moshi_state_dict

transformers = pytest.importorskip(
    "transformers", reason="the reference transformers.MimiModel is not installed"
)
pytestmark = pytest.mark.arith

#: moshi's published Mimi (moshi/models/loaders.py ``_seanet_kwargs``, ``_transformer_kwargs``,
#: ``_quantizer_kwargs`` at kyutai-labs/moshi e6a55d2), in rvqkit's field names.
MOSHI_PUBLISHED = {
    "sampling_rate": 24000,
    "channels": 1,
    "hidden_size": 512,  # seanet dimension = transformer d_model
    "num_filters": 64,
    "num_residual_layers": 1,
    "upsampling_ratios": (8, 6, 5, 4),
    "kernel_size": 7,
    "last_kernel_size": 3,
    "residual_kernel_size": 3,
    "dilation_growth_rate": 2,
    "compress": 2,
    "use_conv_shortcut": False,  # true_skip
    "codebook_size": 2048,  # bins
    "codebook_dim": 256,  # quantizer dimension
    "num_quantizers": 32,
    "num_semantic_quantizers": 1,
    "num_hidden_layers": 8,
    "intermediate_size": 2048,
    "num_attention_heads": 8,
    "head_dim": 64,
    "rope_theta": 10000.0,  # max_period
    "sliding_window": 250,  # context
    "norm_eps": 1e-5,  # nn.LayerNorm(eps=1e-5) for norm="layer_norm"
    "latent_stride": 2,  # frame_rate 12.5 from 25 Hz
    "upsample_groups": 512,  # ConvTrUpsample1d(channel_wise=True): depthwise
}


def hf_model(folder):
    model, info = transformers.MimiModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


@torch.inference_mode()
def hf_codes_audio(model, x: torch.Tensor, n_q: int) -> tuple[torch.Tensor, torch.Tensor]:
    codes = model.encode(x, num_quantizers=n_q).audio_codes
    return codes, model.decode(codes).audio_values


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(transformers model, rvqkit model from the transformers folder, rvqkit model from the moshi file)."""
    model = random_mimi(SMALL, seed=1)
    folder = save_hf_folder(model, tmp_path_factory.mktemp("mimi_hf"))
    moshi = save_moshi_file(model, tmp_path_factory.mktemp("mimi_moshi") / "mimi.safetensors")
    # A moshi file carries no config: heads, window and RoPE base are the published ones unless given.
    return hf_model(folder), load_mimi(folder)[0], load_mimi(moshi, config=SMALL)[0]


def test_published_config_is_transformers_and_moshi_defaults():
    ours = MimiConfig()
    assert ours == MimiConfig.from_hf_config(transformers.MimiConfig().to_dict())
    assert {k: getattr(ours, k) for k in MOSHI_PUBLISHED} == MOSHI_PUBLISHED
    assert (ours.hop_length, ours.frame_rate, ours.kbps(8), ours.kbps(32)) == (1920, 12.5, 1.1, 4.4)
    hf = transformers.MimiConfig()
    assert (hf.frame_size, hf.frame_rate, hf.num_quantizers) == (ours.hop_length, ours.frame_rate, 32)


@pytest.mark.parametrize(
    "kind, seconds, n_q",
    [(k, s, n) for k in KINDS for s, n in ((1.0, 16), (2.3, 5))] + [("speech", 1.7, 1)],
)
def test_small_parity(small, kind, seconds, n_q):
    hf, ours, _ = small
    x = signal(kind, int(seconds * SR) + 77, seed=int(seconds * 10))  # never a multiple of 1920
    ref_codes, ref_audio = hf_codes_audio(hf, x, n_q)
    with torch.inference_mode():
        codes = ours.encode(x, n_q)
        audio = ours.decode(codes)
    assert codes.shape == ref_codes.shape == (1, n_q, ours.frames_for_length(x.shape[-1]))
    assert torch.equal(codes, ref_codes)
    assert audio.shape == ref_audio.shape
    assert (audio - ref_audio).abs().max().item() <= 1e-4
    assert len(set(codes[0, -1].tolist())) > 1 or codes.shape[-1] < 4  # the codes vary: a meaningful check


def test_small_parity_batch_and_moshi_file(small):
    """Same-length batch (transformers' own batching) and the model loaded from the moshi file."""
    hf, ours, from_moshi = small
    x = torch.cat([signal(k, 2 * SR + 555, seed=3) for k in KINDS])
    ref_codes, ref_audio = hf_codes_audio(hf, x, 16)
    with torch.inference_mode():
        for model in (ours, from_moshi):
            codes = model.encode(x, 16)
            assert torch.equal(codes, ref_codes)
            assert (model.decode(codes) - ref_audio).abs().max().item() <= 1e-4


def test_transformers_written_folder(small, tmp_path):
    """A folder written by transformers' own save_pretrained, with codebooks stored as embed_sum over a
    cluster_usage other than 1 (both references divide; so must rvqkit)."""
    hf, _, _ = small
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for rvq in (
            hf.quantizer.semantic_residual_vector_quantizer,
            hf.quantizer.acoustic_residual_vector_quantizer,
        ):
            for layer in rvq.layers:
                book = layer.codebook
                usage = 0.5 + 3 * torch.rand(book.cluster_usage.shape, generator=gen)
                usage[0] = 1e-7  # below the 1e-5 clamp
                book.embed_sum.copy_(book.embed * usage.clamp(min=1e-5)[:, None])
                book.cluster_usage.copy_(usage)
                book._embed = None
    hf.save_pretrained(tmp_path)
    reloaded = hf_model(tmp_path)
    ours, config = load_mimi(tmp_path)
    assert config == SMALL
    x = signal("speech", int(1.4 * SR) + 5, seed=11)
    ref_codes, ref_audio = hf_codes_audio(reloaded, x, 16)
    with torch.inference_mode():
        codes = ours.encode(x, 16)
        assert torch.equal(codes, ref_codes)
        assert (ours.decode(codes) - ref_audio).abs().max().item() <= 1e-4


def test_full_published_config(tmp_path):
    """The real kyutai/mimi architecture (random weights): 32 codebooks of 2048, 8+8 transformer layers.
    Inputs under 250 frames (10 s): transformers calls attention with is_causal and no mask; so does rvqkit."""
    model = random_mimi(MimiConfig(), seed=3, fit_seconds=2.0)
    folder = save_hf_folder(model, tmp_path / "hf")
    hf = hf_model(folder)
    ours, config = load_mimi(folder)
    assert config == MimiConfig()
    assert (
        _moshi_config(to_moshi_state_dict(model), tmp_path, KYUTAI_MIMI) == MimiConfig()
    )  # shape from tensors
    x = signal("speech", int(1.3 * SR) + 101, seed=9)
    ref_codes, ref_audio = hf_codes_audio(hf, x, 32)
    with torch.inference_mode():
        codes = ours.encode(x, 32)
        assert torch.equal(codes, ref_codes)
        assert torch.equal(ours.encode(x, 8), ref_codes[:, :8])  # RVQ is sequential: a prefix
        audio = ours.decode(codes)
    assert (audio - ref_audio).abs().max().item() <= 1e-4
    assert len(set(codes[0, 20].tolist())) > 1
