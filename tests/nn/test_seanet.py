"""rvqkit.nn.seanet: the SEANet encoder, decoder and residual block streamed chunk by chunk equal their
offline forward, on a small random-weight configuration (EnCodec's layer structure, narrow widths).

Exactness. A whole signal as one final chunk runs the offline calls themselves through the encoder
(asserted equal). Chunked, the convolutions run on other widths and oneDNN may round differently
(see tests/nn/test_conv.py); the decoder's transposed convolutions also sum their overlaps and add
their bias outside PyTorch's kernel, even for one chunk. Measured on 1 and 2 threads, as
max |diff| / max(1, |output|): encoder 1.3e-07, decoder 1.3e-07, residual block 1.1e-07 against
offline; 1.3e-07 between a lone row and a batch of 3; asserted within ``TOL``.
"""

from __future__ import annotations

import pytest
import torch
from nn_helpers import CHUNKS, CHUNKS_WITH_EMPTY, assert_close, offline, stream

from rvqkit.config import CodecConfig
from rvqkit.nn.seanet import ResnetBlock, SEANetDecoder, SEANetEncoder
from rvqkit.nn.streaming import split_state, stack_states

TOL = 1e-6  # relative to max(1, |output|); measured at most 1.3e-07 (see the docstring)

CONFIGS = {
    "conv-shortcut": CodecConfig(
        num_filters=4, hidden_size=8, upsampling_ratios=(4, 2), num_residual_layers=2
    ),
    "identity-shortcut": CodecConfig(
        num_filters=4, hidden_size=8, upsampling_ratios=(2, 3), use_conv_shortcut=False, kernel_size=5
    ),
}


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def models(request) -> tuple[CodecConfig, SEANetEncoder, SEANetDecoder]:
    cfg = CONFIGS[request.param]
    torch.manual_seed(0)
    return cfg, SEANetEncoder(cfg).eval(), SEANetDecoder(cfg).eval()


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("length", [3, 173])
def test_encoder_chunked_equals_offline(models, length):
    cfg, enc, _ = models
    x = _randn(2, cfg.audio_channels, length, seed=length)
    ref = offline(enc, x)
    assert ref.shape == (2, cfg.hidden_size, -(-length // cfg.hop_length))
    assert torch.equal(stream(enc, x, length), ref)  # one final chunk: the offline calls themselves
    for sizes in [*CHUNKS, cfg.hop_length, CHUNKS_WITH_EMPTY]:
        assert_close(stream(enc, x, sizes), ref, TOL)


@pytest.mark.parametrize("frames", [1, 23])
def test_decoder_chunked_equals_offline(models, frames):
    cfg, _, dec = models
    z = _randn(2, cfg.hidden_size, frames, seed=frames)
    ref = offline(dec, z)
    assert ref.shape == (2, cfg.audio_channels, frames * cfg.hop_length)
    for sizes in [*CHUNKS, CHUNKS_WITH_EMPTY]:
        assert_close(stream(dec, z, sizes), ref, TOL)


def test_encoder_halves_at_the_lstm(models):
    cfg, enc, _ = models
    head, lstm, tail = enc.split_at_lstm()
    x = _randn(2, cfg.audio_channels, 150, seed=5)
    with torch.inference_mode():
        halves = tail(lstm(head(x.clone()))[0])
    assert torch.equal(halves, offline(enc, x))
    assert_close(stream(tail, lstm.step(stream(head, x, 7), lstm.init_state(2)), 3), halves, TOL)


@pytest.mark.parametrize("shortcut", [True, False])
def test_resnet_block_chunked_equals_offline(shortcut):
    cfg = CodecConfig(use_conv_shortcut=shortcut)
    torch.manual_seed(1)
    block = ResnetBlock(cfg, 6, (2, 1)).eval()
    x = _randn(2, 6, 50, seed=6)
    ref = offline(block, x)
    assert torch.equal(stream(block, x, 50), ref)
    for sizes in [*CHUNKS, CHUNKS_WITH_EMPTY]:
        assert_close(stream(block, x, sizes), ref, TOL)
    # The block path waits for its first conv's left padding (2 * dilation samples); the shortcut does not.
    state = block.init_state(2)
    with torch.inference_mode():
        assert block.step(x[..., :4].clone(), state).shape[-1] == 0
        assert state.pending is not None and state.pending.shape[-1] == 4
        assert block.step(x[..., 4:5].clone(), state).shape[-1] == 5
        assert state.pending.shape[-1] == 0


def test_steps_leave_the_input_alone(models):
    """In-place ELUs work on intermediate results only: a chunk handed to step is not modified."""
    cfg, enc, dec = models
    for module, x in (
        (enc, _randn(1, cfg.audio_channels, 40, seed=7)),
        (dec, _randn(1, cfg.hidden_size, 5, seed=8)),
    ):
        state, kept = module.init_state(1), x.clone()
        with torch.inference_mode():
            module.step(x, state)
            module.step(x, state, final=True)
        assert torch.equal(x, kept)


def test_batch_rows(models):
    cfg, enc, dec = models
    x = _randn(3, cfg.audio_channels, 101, seed=9)
    z = _randn(3, cfg.hidden_size, 9, seed=10)
    for module, inp in ((enc, x), (dec, z)):
        ref, streamed = offline(module, inp), stream(module, inp, 7)
        for i in range(3):
            assert_close(offline(module, inp[i : i + 1]), ref[i : i + 1], TOL)
            assert_close(stream(module, inp[i : i + 1], 7), streamed[i : i + 1], TOL)


@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_state_reset_and_rows(models, which):
    cfg, enc, dec = models
    module, inp, cut = (
        (enc, _randn(3, cfg.audio_channels, 120, seed=11), 37)
        if which == "encoder"
        else (dec, _randn(3, cfg.hidden_size, 12, seed=12), 5)
    )
    fresh = stream(module, inp, 4)
    state = module.init_state(3)
    stream(module, inp.flip(-1), 3, state)
    assert torch.equal(stream(module, inp, 4, module.init_state(3)), fresh)  # a new state starts fresh

    state = module.init_state(3)
    with torch.inference_mode():
        head = module.step(inp[..., :cut].clone(), state)
        parts = split_state(state, [2, 1])
        restacked = stack_states(parts)
        together = module.step(inp[..., cut:].clone(), restacked, final=True)
        pair = module.step(inp[:2, :, cut:].clone(), parts[0], final=True)
        alone = module.step(inp[2:, :, cut:].clone(), parts[1], final=True)
    streamed_once = stream(module, inp, [cut, 10_000])  # the same two calls, unsplit
    assert torch.equal(torch.cat([head, together], -1), streamed_once)
    assert_close(torch.cat([head[:2], pair], -1), streamed_once[:2], TOL)
    assert_close(torch.cat([head[2:], alone], -1), streamed_once[2:], TOL)
    assert_close(streamed_once, fresh, TOL)


def test_non_causal_and_group_norm_models_do_not_stream():
    for cfg in (
        CodecConfig(num_filters=2, hidden_size=4, upsampling_ratios=(2,), use_causal_conv=False),
        CodecConfig(num_filters=2, hidden_size=4, upsampling_ratios=(2,), norm_type="time_group_norm"),
    ):
        for module in (SEANetEncoder(cfg), SEANetDecoder(cfg)):
            with pytest.raises(ValueError, match="causal"):
                module.init_state(1)
