"""rvqkit.nn.streaming: the streaming protocol's helpers (stateless layers, empty outputs) and the
generic state trees that let streams in the same phase run as one batch (signature, stack, split).

Module composition is checked on a two-layer chain (causal conv, ELU, causal conv) run through
``step_layer``: chunked equals offline within ``TOL`` (measured 6.0e-08 as max |diff| / max(1, |output|):
chunked convolutions may round differently by width and thread count, see tests/nn/test_conv.py; a
lone row against a batch of 3: 1.7e-07), and one final chunk exactly.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from nn_helpers import CHUNKS, CHUNKS_WITH_EMPTY, assert_close, offline, stream
from torch import nn

from rvqkit.nn.conv import ConvState, SConv1d
from rvqkit.nn.lstm import LSTMState
from rvqkit.nn.streaming import (
    StreamingModule,
    empty_like_time,
    init_layer_state,
    split_state,
    stack_states,
    state_signature,
    step_layer,
)

TOL = 1e-6  # relative to max(1, |output|); measured at most 1.7e-07 (see the docstring)


class Chain(StreamingModule):
    """conv -> ELU -> strided conv, streamed layer by layer with the module's helpers."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [SConv1d(2, 4, 5, causal=True), nn.ELU(), SConv1d(4, 3, 6, stride=3, causal=True)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def init_state(self, batch_size: int) -> list:
        return [init_layer_state(layer, batch_size) for layer in self.layers]

    def step(self, x: torch.Tensor, state: list, final: bool = False) -> torch.Tensor:
        for layer, st in zip(self.layers, state, strict=True):
            x = step_layer(layer, x, st, final)
        return x


@pytest.fixture(scope="module")
def chain() -> Chain:
    torch.manual_seed(0)
    return Chain().eval()


def test_chain_chunked_equals_offline(chain):
    x = torch.randn(2, 2, 67, generator=torch.Generator().manual_seed(0))
    ref = offline(chain, x)
    assert torch.equal(stream(chain, x, 67), ref)
    for sizes in [*CHUNKS, 3, CHUNKS_WITH_EMPTY]:
        assert_close(stream(chain, x, sizes), ref, TOL)


def test_stateless_layers_and_empty_outputs(chain):
    state = chain.init_state(2)
    assert state[1] is None and isinstance(state[0], ConvState)
    x = torch.randn(2, 4, 9)
    assert torch.equal(step_layer(nn.ELU(), x, None, final=False), nn.functional.elu(x))
    empty = empty_like_time(torch.zeros(2, 5, 7, dtype=torch.float64), 3)
    assert empty.shape == (2, 3, 0) and empty.dtype == torch.float64
    with torch.inference_mode():
        assert chain.step(torch.zeros(2, 2, 0), state).shape == (2, 3, 0)  # nothing in, nothing out
        assert chain.step(torch.randn(2, 2, 3), state).shape == (2, 3, 0)  # left padding not yet read


def test_base_module_has_no_streaming():
    module = StreamingModule()
    with pytest.raises(NotImplementedError):
        module.init_state(1)
    with pytest.raises(NotImplementedError):
        module.step(torch.zeros(1, 1, 1), None)


@dataclasses.dataclass
class Inner:
    t: torch.Tensor | None
    count: int


@dataclasses.dataclass
class Outer:
    items: list
    inner: Inner
    flag: bool = True


def _tree(rows: int, width: int, count: int, seed: int) -> Outer:
    gen = torch.Generator().manual_seed(seed)
    return Outer(
        [torch.randn(rows, 2, width, generator=gen), None, Inner(torch.randn(rows, 3, generator=gen), count)],
        Inner(None, count),
    )


def test_signature_is_everything_but_the_batch():
    assert state_signature(_tree(1, 4, 2, 0)) == state_signature(_tree(3, 4, 2, 1))
    assert state_signature(_tree(1, 4, 2, 0)) != state_signature(_tree(1, 5, 2, 0))  # buffer length
    assert state_signature(_tree(1, 4, 2, 0)) != state_signature(_tree(1, 4, 3, 0))  # counter
    a, b = ConvState(torch.zeros(1, 2, 3), False, 0), ConvState(torch.zeros(2, 2, 3), False, 0)
    assert state_signature(a) == state_signature(b)
    assert state_signature(a) != state_signature(ConvState(torch.zeros(1, 2, 3), True, 0))  # phase
    assert state_signature(a) != state_signature(
        ConvState(torch.zeros(1, 2, 3, dtype=torch.float64), False, 0)
    )


def test_stack_and_split_are_inverse():
    trees = [_tree(1, 4, 2, 0), _tree(2, 4, 2, 1), _tree(1, 4, 2, 2)]
    stacked = stack_states(trees)
    assert isinstance(stacked, Outer) and isinstance(stacked.inner, Inner)
    assert stacked.items[0].shape == (4, 2, 4) and stacked.items[1] is None and stacked.inner.count == 2
    assert torch.equal(stacked.items[2].t, torch.cat([t.items[2].t for t in trees]))
    parts = split_state(stacked, [1, 2, 1])
    for part, tree in zip(parts, trees, strict=True):
        assert state_signature(part) == state_signature(tree)
        assert torch.equal(part.items[0], tree.items[0]) and torch.equal(part.items[2].t, tree.items[2].t)
        assert part.items[1] is None and part.inner.t is None and part.flag

    # A fresh state (nothing stored yet) stacks and splits as it is.
    fresh = stack_states([LSTMState(), LSTMState()])
    assert fresh == LSTMState() and split_state(fresh, [1, 1]) == [LSTMState(), LSTMState()]


def test_chain_state_rows(chain):
    """Split a running chain's state into rows, stack it back: the same state and the same outputs."""
    x = torch.randn(3, 2, 50, generator=torch.Generator().manual_seed(1))
    state = chain.init_state(3)
    with torch.inference_mode():
        head = chain.step(x[..., :20].clone(), state)
        parts = split_state(state, [1, 1, 1])
        assert all(state_signature(p) == state_signature(state) for p in parts)
        restacked = stack_states(parts)
        together = chain.step(x[..., 20:].clone(), restacked, final=True)
        rows = [chain.step(x[i : i + 1, :, 20:].clone(), p, final=True) for i, p in enumerate(parts)]
    both = torch.cat([head, together], -1)
    assert torch.equal(both, stream(chain, x, [20, 10_000]))
    for i, row in enumerate(rows):
        assert_close(torch.cat([head[i : i + 1], row], -1), both[i : i + 1], TOL)  # a lone row: see test_conv
