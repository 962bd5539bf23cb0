"""Shared by tests/nn/: feed a signal to a streaming module chunk by chunk, and compare floats."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from rvqkit.nn.streaming import StreamingModule

# Chunk sizes every layer is streamed with: one sample, odd primes, and larger than any test signal.
# Each test adds its layer's stride; ``CHUNKS_WITH_EMPTY`` repeats a pattern with empty chunks between.
CHUNKS = [1, 3, 7, 13, 10_000]
CHUNKS_WITH_EMPTY = [0, 5, 0, 0, 2, 11, 0, 1]


def stream(
    module: StreamingModule, x: torch.Tensor, sizes: int | Iterable[int], state: Any = None
) -> torch.Tensor:
    """``module``'s outputs for ``x`` ``[B, C, T]`` fed in chunks of ``sizes`` (one size, or a pattern
    repeated), then the rest as the final chunk. Each chunk is a copy, so nothing sees ``x``'s storage."""
    state = module.init_state(x.shape[0]) if state is None else state
    pattern = [sizes] if isinstance(sizes, int) else list(sizes)
    outs, pos, i = [], 0, 0
    with torch.inference_mode():
        while pos + pattern[i % len(pattern)] < x.shape[-1]:
            n = pattern[i % len(pattern)]
            outs.append(module.step(x[..., pos : pos + n].clone(), state))
            pos, i = pos + n, i + 1
        outs.append(module.step(x[..., pos:].clone(), state, final=True))
    return torch.cat(outs, dim=-1)


def offline(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` on a copy of ``x`` (the output only, for the LSTM)."""
    with torch.inference_mode():
        y = module(x.clone())
    return y[0] if isinstance(y, tuple) else y


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item() if a.numel() else 0.0


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    """Same shape and ``max |a - b| <= tol * max(1, max |b|)`` (tolerances are measured; see the callers)."""
    scale = max(1.0, b.abs().max().item() if b.numel() else 0.0)
    diff = max_diff(a, b)
    assert diff <= tol * scale, f"max |diff| {diff:.3g} > {tol:.3g} * {scale:.3g}"
