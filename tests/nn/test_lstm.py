"""rvqkit.nn.lstm: SLSTM streamed chunk by chunk equals the offline forward, and its (h, c) state.

An LSTM step is the same computation whatever the chunking: each time step reads the previous (h, c),
which streaming carries between calls. Measured bit-exact for every chunking here on 1 and 2 threads
(and at EnCodec's width, 512), so chunked streaming asserts ``torch.equal``. Across batch sizes it is exact for 2 rows or more (the fact
tests/test_lstm_batch.py checks at EnCodec's size) but a batch of one row takes another kernel:
measured up to 4.6e-08 (max |diff| / max(1, |output|)), asserted within ``TOL``.
"""

from __future__ import annotations

import pytest
import torch
from nn_helpers import CHUNKS, CHUNKS_WITH_EMPTY, assert_close, offline, stream

from rvqkit.nn.lstm import SLSTM, LSTMState
from rvqkit.nn.streaming import split_state, stack_states

TOL = 1e-6  # a batch of 1 against a batch of 3; measured up to 4.6e-08
DIM, LAYERS = 16, 2


@pytest.fixture(scope="module")
def lstm() -> SLSTM:
    torch.manual_seed(0)
    return SLSTM(DIM, LAYERS).eval()


def _x(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, DIM, length, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("length", [1, 6, 50])
def test_lstm_chunked_equals_offline(lstm, length):
    x = _x(3, length, length)
    ref = offline(lstm, x)
    for sizes in [*CHUNKS, CHUNKS_WITH_EMPTY]:
        assert torch.equal(stream(lstm, x, sizes), ref), sizes


def test_lstm_skip_connection_and_state(lstm):
    """Output = LSTM(x) + x; streaming's state is the forward's (h, c), batch first."""
    x = _x(2, 20, 1)
    with torch.inference_mode():
        y, (h, c) = lstm(x.clone())
        raw = lstm.lstm(x.permute(2, 0, 1))[0].permute(1, 2, 0)
        state = lstm.init_state(2)
        assert state == LSTMState()
        streamed = lstm.step(x.clone(), state)
    assert torch.equal(y, raw + x)
    assert torch.equal(streamed, y)
    assert state.h.shape == (2, LAYERS, DIM) and state.c.shape == (2, LAYERS, DIM)
    assert torch.equal(state.h, h.transpose(0, 1)) and torch.equal(state.c, c.transpose(0, 1))

    # The forward resumes from a state as the stream does: the second half from the first half's state.
    with torch.inference_mode():
        _, hc = lstm(x[..., :8].clone())
        second = lstm(x[..., 8:].clone(), hc)[0]
    assert torch.equal(second, y[..., 8:])

    with torch.inference_mode():
        empty = lstm.step(x[..., :0], state)
    assert empty.shape == (2, DIM, 0)
    assert torch.equal(state.h, h.transpose(0, 1))  # an empty chunk leaves the state alone


def test_lstm_batch_rows(lstm):
    x = _x(3, 40, 2)
    ref, streamed = offline(lstm, x), stream(lstm, x, 7)
    pair = offline(lstm, x[1:])
    assert torch.equal(pair, ref[1:])  # 2 rows or 3: the same floats (see the docstring)
    assert torch.equal(stream(lstm, x[1:], 7), streamed[1:])
    for i in range(3):
        assert_close(offline(lstm, x[i : i + 1]), ref[i : i + 1], TOL)  # a lone row: TOL
        assert_close(stream(lstm, x[i : i + 1], 7), streamed[i : i + 1], TOL)


def test_lstm_state_reset_and_rows(lstm):
    x = _x(3, 30, 3)
    fresh = stream(lstm, x, 5)
    state = lstm.init_state(3)
    stream(lstm, _x(3, 9, 4), 2, state)
    assert state.h is not None
    assert torch.equal(stream(lstm, x, 5, lstm.init_state(3)), fresh)  # a new state starts fresh

    state = lstm.init_state(3)
    with torch.inference_mode():
        head = lstm.step(x[..., :12].clone(), state)
        parts = split_state(state, [1, 2])
        assert [p.h.shape[0] for p in parts] == [1, 2] and [p.c.shape[0] for p in parts] == [1, 2]
        assert torch.equal(parts[0].h, state.h[:1]) and torch.equal(parts[1].c, state.c[1:])
        restacked = stack_states(parts)
        assert torch.equal(restacked.h, state.h) and torch.equal(restacked.c, state.c)
        together = lstm.step(x[..., 12:].clone(), restacked, final=True)
        pair = lstm.step(x[1:, :, 12:].clone(), parts[1], final=True)
        alone = lstm.step(x[:1, :, 12:].clone(), parts[0], final=True)
    assert torch.equal(torch.cat([head, together], -1), fresh)
    assert torch.equal(torch.cat([head[1:], pair], -1), fresh[1:])  # 2 rows of 3: exact
    assert_close(torch.cat([head[:1], alone], -1), fresh[:1], TOL)  # a lone row: TOL

    # Rows at different points of their streams stack too: LSTM states have no phase.
    a, b = lstm.init_state(1), lstm.init_state(1)
    with torch.inference_mode():
        lstm.step(x[:1, :, :4].clone(), a)
        lstm.step(x[1:2, :, :11].clone(), b)
        both = lstm.step(torch.cat([x[:1, :, 4:20], x[1:2, :, 11:27]]), stack_states([a, b]))
    pair = stream(lstm, x[:2], 4)  # the same two rows, as a batch of 2 throughout
    assert_close(both[0], pair[0, :, 4:20], TOL)  # the heads ran as lone rows
    assert_close(both[1], pair[1, :, 11:27], TOL)
