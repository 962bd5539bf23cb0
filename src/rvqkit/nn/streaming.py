"""Streaming: running a module on a signal cut into chunks, with its state carried between calls.

One network serves offline and streaming use. Each streaming module keeps the usual ``forward`` for a
whole signal and adds ``init_state`` and ``step``: ``step(x, state, final)`` consumes the next chunk
``x`` ``[B, C, n]`` (``n`` may be 0), updates ``state`` in place and returns every output sample that
is now final (possibly none). ``final=True`` marks the end of the signal: the module then applies the
end-of-signal padding exactly as ``forward`` does and returns the rest. Feeding a whole signal as one
final chunk is the offline computation.

States are explicit objects owned by the caller, so one model can serve many independent streams
(a state per stream) and a state can be dropped or re-created (reset) at any time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn


class StreamingModule(nn.Module):
    """A module with an explicit streaming state (see the module docstring)."""

    def init_state(self, batch_size: int) -> Any:
        """A fresh state for ``batch_size`` independent streams (start of signal)."""
        raise NotImplementedError

    def step(self, x: torch.Tensor, state: Any, final: bool = False) -> torch.Tensor:
        """Consume chunk ``x`` and return the outputs that are now final."""
        raise NotImplementedError


def init_layer_state(layer: nn.Module, batch_size: int) -> Any:
    """The layer's fresh state, or None for stateless layers (activations)."""
    return layer.init_state(batch_size) if isinstance(layer, StreamingModule) else None


def step_layer(layer: nn.Module, x: torch.Tensor, state: Any, final: bool) -> torch.Tensor:
    """Stream ``x`` through ``layer``: stateful layers step, stateless ones apply pointwise."""
    if isinstance(layer, StreamingModule):
        return layer.step(x, state, final)
    out: torch.Tensor = layer(x)
    return out


def empty_like_time(x: torch.Tensor, channels: int) -> torch.Tensor:
    """A ``[B, channels, 0]`` tensor on ``x``'s device and dtype: "no output yet"."""
    return x.new_zeros(x.shape[0], channels, 0)


# -- several streams in one batch -----------------------------------------------------------------------
# States are trees of dataclasses, lists, tensors with the batch first, and plain counters. Streams whose
# trees have the same signature (same buffer lengths and counters: the same phase) can be stacked into one
# state, stepped together in one model call, and split back. Plain dataclasses keep this generic.


def state_signature(state: Any) -> Any:
    """Everything about a state except its batch contents: equal signatures stack."""
    if dataclasses.is_dataclass(state):
        return (
            type(state).__name__,
            *(state_signature(getattr(state, f.name)) for f in dataclasses.fields(state)),
        )
    if isinstance(state, (list, tuple)):
        return tuple(state_signature(s) for s in state)
    if isinstance(state, torch.Tensor):
        return ("T", tuple(state.shape[1:]), state.dtype)
    return state


def stack_states(states: list[Any]) -> Any:
    """One state for all the streams of ``states`` (same signature), batches concatenated in order."""
    first = states[0]
    if dataclasses.is_dataclass(first):
        fields = {
            f.name: stack_states([getattr(s, f.name) for s in states]) for f in dataclasses.fields(first)
        }
        cls: Any = type(first)  # a dataclass instance's own type (mypy narrows it to the class object)
        return cls(**fields)
    if isinstance(first, list):
        return [stack_states(list(group)) for group in zip(*states, strict=True)]
    if isinstance(first, torch.Tensor):
        return torch.cat(states, dim=0)
    return first


def split_state(state: Any, sizes: list[int]) -> list[Any]:
    """Inverse of :func:`stack_states`: one state per group of ``sizes`` batch items."""
    if dataclasses.is_dataclass(state):
        parts = {f.name: split_state(getattr(state, f.name), sizes) for f in dataclasses.fields(state)}
        cls: Any = type(state)  # a dataclass instance's own type (mypy narrows it to the class object)
        return [cls(**{k: v[i] for k, v in parts.items()}) for i in range(len(sizes))]
    if isinstance(state, list):
        columns = [split_state(s, sizes) for s in state]
        return [[col[i] for col in columns] for i in range(len(sizes))]
    if isinstance(state, torch.Tensor):
        return list(torch.split(state, sizes, dim=0))
    return [state for _ in sizes]
