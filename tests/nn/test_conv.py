"""rvqkit.nn.conv: SConv1d and SConvTranspose1d streamed chunk by chunk equal the offline forward.

Exactness. Streaming SConv1d calls the same convolution on shorter windows of the same padded signal;
oneDNN picks its kernel by tensor width and thread count, so a chunk's floats may round differently
(measured over these tests, as max |diff| / max(1, |output|): exact on 2 threads, 1.0e-07 on 1 thread,
for the 1x1 convolution fed chunks of a few samples).
The tests assert ``TOL`` = 1e-6 for chunked streaming and exact equality where the code runs the very
same call: a whole signal as one final chunk. Streaming SConvTranspose1d sums the overlap of
consecutive chunks itself and adds the bias last, where PyTorch's kernel does both inside one call:
measured exact for 6 input channels, 1.2e-07 for 8 (EnCodec's widths are multiples of 8), and 1.8e-07 for a kernel of 3 * stride (three terms per sample), so TOL again; its rows are
stepped one by one on CPU, which makes a row's stream exactly batch-invariant. A lone row against a
batch of 3 (another oneDNN kernel): measured 1.7e-07 (conv), exact (transposed, offline).
"""

from __future__ import annotations

import pytest
import torch
from nn_helpers import CHUNKS, CHUNKS_WITH_EMPTY, assert_close, offline, stream

from rvqkit.nn.conv import ConvState, SConv1d, SConvTranspose1d
from rvqkit.nn.streaming import split_state, stack_states

TOL = 1e-6  # relative to max(1, |output|); measured at most 1.8e-07 on 1 or 2 threads (see the docstring)

# (in, out, kernel, stride, dilation): EnCodec's first/last conv, a dilated residual conv, the 1x1
# shortcut, and downsampling convs (kernel = 2 * stride) as in its encoder.
CONVS = [(1, 4, 7, 1, 1), (6, 3, 3, 1, 2), (3, 6, 1, 1, 1), (4, 8, 8, 4, 1), (3, 5, 16, 8, 1)]
LENGTHS = [1, 5, 101]  # shorter than the left padding, about it, and long


def _conv(cin: int, cout: int, k: int, s: int, d: int, seed: int = 0, **kw) -> SConv1d:
    torch.manual_seed(seed)
    return SConv1d(cin, cout, k, s, d, causal=True, **kw).eval()


@pytest.mark.parametrize("spec", CONVS, ids=lambda s: "k{2}s{3}d{4}".format(*s))
def test_conv_chunked_equals_offline(spec):
    cin, cout, k, s, d = spec
    conv = _conv(*spec)
    for length in LENGTHS:
        x = torch.randn(2, cin, length, generator=torch.Generator().manual_seed(length))
        ref = offline(conv, x)
        assert torch.equal(stream(conv, x, length), ref)  # one final chunk: the offline call itself
        for sizes in [*CHUNKS, s, CHUNKS_WITH_EMPTY]:
            assert_close(stream(conv, x, sizes), ref, TOL)


def test_conv_outputs_follow_the_input():
    """Outputs start once the left reflect padding's samples (1..padding_total) have arrived, then each
    complete stride window gives one; the final call adds the end padding's last window."""
    conv = _conv(3, 5, 16, 8, 1)  # padding_total 8
    state = conv.init_state(1)
    x = torch.randn(1, 3, 30)
    with torch.inference_mode():
        assert conv.step(x[..., :8], state).shape[-1] == 0
        assert conv.step(x[..., 8:9], state).shape[-1] == 1  # window 0: 8 padded + samples 0..7
        assert conv.step(x[..., 9:16], state).shape[-1] == 1
        assert conv.step(x[..., 16:30], state).shape[-1] == 1  # window 2 ends at sample 23
        assert conv.step(x[..., 30:], state, final=True).shape[-1] == 1  # ceil(30 / 8) = 4 in all
    assert offline(conv, x).shape[-1] == 4


def test_conv_batch_rows():
    """A row alone and inside a batch: a batch of 1 takes another oneDNN kernel than a batch of 3
    (measured 1.7e-07 here), so these compare with TOL."""
    conv = _conv(4, 8, 8, 4, 1)
    x = torch.randn(3, 4, 97, generator=torch.Generator().manual_seed(1))
    ref, streamed = offline(conv, x), stream(conv, x, 7)
    for i in range(3):
        assert_close(offline(conv, x[i : i + 1]), ref[i : i + 1], TOL)
        assert_close(stream(conv, x[i : i + 1], 7), streamed[i : i + 1], TOL)


def test_conv_state_reset_and_rows():
    conv = _conv(3, 5, 16, 8, 1)
    gen = torch.Generator().manual_seed(2)
    x, other = torch.randn(3, 3, 90, generator=gen), torch.randn(3, 3, 41, generator=gen)
    fresh = stream(conv, x, 7)
    state = conv.init_state(3)
    stream(conv, other, 5, state)  # a whole other signal, final included
    assert state.buffer is not None
    assert torch.equal(stream(conv, x, 7, conv.init_state(3)), fresh)  # a new state is a fresh start
    assert conv.init_state(3) == ConvState()

    # Split a running state into rows and stack them back: the rows' buffers, same phase, same floats.
    for cut in (5, 40):  # still at the start (left padding due), and past it
        state = conv.init_state(3)
        with torch.inference_mode():
            head = conv.step(x[..., :cut].clone(), state)
            parts = split_state(state, [1, 2])
            assert [p.buffer.shape[0] for p in parts] == [1, 2]
            assert all(p.at_start == state.at_start and p.emitted == state.emitted for p in parts)
            restacked = stack_states(parts)
            assert torch.equal(restacked.buffer, state.buffer)
            together = conv.step(x[..., cut:].clone(), restacked, final=True)
            alone = conv.step(x[:1, :, cut:].clone(), parts[0], final=True)
            rest = conv.step(x[1:, :, cut:].clone(), parts[1], final=True)
        assert torch.equal(torch.cat([head, together], -1), fresh)
        assert_close(torch.cat([head[:1], alone], -1), fresh[:1], TOL)  # a batch of 1: TOL, as above
        assert_close(torch.cat([head[1:], rest], -1), fresh[1:], TOL)


def test_conv_streaming_needs_causal_without_group_norm():
    with pytest.raises(ValueError, match="causal convolutions without time group norm"):
        SConv1d(2, 2, 3, causal=False).init_state(1)
    with pytest.raises(ValueError, match="causal convolutions without time group norm"):
        SConv1d(2, 2, 3, causal=True, norm="time_group_norm").init_state(1)


# -- transposed convolution ------------------------------------------------------------------------------

TRANSPOSED = [(6, 3, 4, 2), (6, 3, 8, 4), (8, 4, 16, 8), (6, 3, 10, 5)]  # kernel = 2 * stride, as EnCodec


def _transposed(cin: int, cout: int, k: int, s: int, seed: int = 0, **kw) -> SConvTranspose1d:
    torch.manual_seed(seed)
    return SConvTranspose1d(cin, cout, k, s, causal=True, **kw).eval()


@pytest.mark.parametrize("spec", TRANSPOSED, ids=lambda s: "k{2}s{3}".format(*s))
def test_transposed_chunked_equals_offline(spec):
    cin, cout, k, s = spec
    conv = _transposed(*spec)
    for length in (1, 4, 37):
        x = torch.randn(2, cin, length, generator=torch.Generator().manual_seed(length))
        ref = offline(conv, x)
        assert ref.shape[-1] == length * s
        for sizes in [*CHUNKS, s, CHUNKS_WITH_EMPTY]:
            assert_close(stream(conv, x, sizes), ref, TOL)  # measured up to 1.2e-07 (docstring)


def test_transposed_three_term_overlap_is_close():
    """Kernel 3, stride 1 (not in EnCodec): three terms per sample, summed partly in the stream's state
    and the bias added last, so not bit-exact (measured 1.8e-07 against offline)."""
    conv = _transposed(6, 3, 3, 1)
    x = torch.randn(2, 6, 60, generator=torch.Generator().manual_seed(3))
    ref = offline(conv, x)
    for sizes in [*CHUNKS, CHUNKS_WITH_EMPTY]:
        assert_close(stream(conv, x, sizes), ref, TOL)


def test_transposed_batch_rows_and_state():
    """The step runs CPU batches row by row (see SConvTranspose1d.step), so a row's stream is exact alone
    or in a batch; offline, a batch of 1 may take another kernel (measured exact here, 6e-08 for other shapes): TOL."""
    conv = _transposed(8, 4, 16, 8)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 8, 29, generator=gen)
    ref, streamed = offline(conv, x), stream(conv, x, 3)
    for i in range(3):
        assert_close(offline(conv, x[i : i + 1]), ref[i : i + 1], TOL)
        assert torch.equal(stream(conv, x[i : i + 1], 3), streamed[i : i + 1])

    state = conv.init_state(3)
    stream(conv, torch.randn(3, 8, 11, generator=gen), 2, state)
    assert state.tail is not None
    assert torch.equal(stream(conv, x, 3, conv.init_state(3)), streamed)  # a new state starts fresh

    state = conv.init_state(3)
    with torch.inference_mode():
        head = conv.step(x[..., :10].clone(), state)
        parts = split_state(state, [2, 1])
        assert [p.tail.shape[0] for p in parts] == [2, 1]
        restacked = stack_states(parts)  # before the parts step (a step replaces their tails)
        assert torch.equal(restacked.tail, state.tail)
        tails = [
            conv.step(x[a:b, :, 10:].clone(), p, final=True)
            for (a, b), p in zip([(0, 2), (2, 3)], parts, strict=True)
        ]
        both = conv.step(x[..., 10:].clone(), restacked, final=True)
    split_then_apart = torch.cat([head, torch.cat(tails)], -1)
    assert torch.equal(split_then_apart, torch.cat([head, both], -1))  # row by row either way
    assert_close(split_then_apart, ref, TOL)


def test_transposed_streaming_needs_causal_right_trim():
    with pytest.raises(ValueError, match="causal transposed convolution trimmed on the right"):
        SConvTranspose1d(2, 2, 4, 2, causal=False).init_state(1)
    with pytest.raises(ValueError, match="causal transposed convolution trimmed on the right"):
        SConvTranspose1d(2, 2, 8, 2, causal=True, trim_right_ratio=0.5).init_state(1)
    with pytest.raises(ValueError, match="causal transposed convolution trimmed on the right"):
        SConvTranspose1d(2, 2, 4, 2, causal=True, norm="time_group_norm").init_state(1)
