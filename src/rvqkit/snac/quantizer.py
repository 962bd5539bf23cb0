"""SNAC's multi-scale residual vector quantizer (``snac/vq.py``, snac 1.2.1).

Level ``i`` (coarsest first) quantizes the full-rate residual averaged over ``stride_i`` frames:
``avg_pool`` → ``in_proj`` (1x1 conv to ``codebook_dim``) → nearest L2-normalized codebook entry →
un-normalized entry → ``out_proj`` → repeated ``stride_i`` times → subtracted from the residual.
Codes are a list of ``[B, frames / stride_i]`` int64 tensors, coarsest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F


class VectorQuantize(nn.Module):
    """One level: a factorized, L2-normalized codebook of ``codebook_size`` entries of ``codebook_dim``."""

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.in_proj = nn.Conv1d(input_dim, codebook_dim, 1)
        self.out_proj = nn.Conv1d(codebook_dim, input_dim, 1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Indices ``[B, T]`` of the nearest codebook entries to ``z_e`` ``[B, codebook_dim, T]`` by L2
        distance between L2-normalized vectors, computed as the reference: ``|e|^2 - 2 e.c + |c|^2``, and
        the first maximum of its negation (the first index on a tie)."""
        enc = F.normalize(z_e.permute(0, 2, 1).reshape(-1, z_e.shape[1]))
        cb = F.normalize(self.codebook.weight)
        dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ cb.t() + cb.pow(2).sum(1, keepdim=True).t()
        return (-dist).max(1)[1].view(z_e.shape[0], -1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook entries ``[B, codebook_dim, T]`` of ``indices`` ``[B, T]`` (not normalized)."""
        return F.embedding(indices, self.codebook.weight).transpose(1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(quantized [B, D, T], indices [B, T / stride])`` of the residual ``z`` ``[B, D, T]``."""
        if self.stride > 1:
            z = F.avg_pool1d(z, self.stride, self.stride)
        z_e = self.in_proj(z)
        indices = self.nearest(z_e)
        z_q = z_e + (self.lookup(indices) - z_e)  # the reference's straight-through sum, same rounding
        z_q = self.out_proj(z_q)
        if self.stride > 1:
            z_q = z_q.repeat_interleave(self.stride, dim=-1)
        return z_q, indices

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """The full-rate contribution ``[B, D, T]`` of ``indices`` ``[B, T / stride]`` (as ``from_codes``)."""
        z_q = self.out_proj(self.lookup(indices))
        return z_q.repeat_interleave(self.stride, dim=-1) if self.stride > 1 else z_q


class ResidualVectorQuantize(nn.Module):
    """The levels of one model, coarsest first (``quantizer.quantizers.i`` in snac's state dict)."""

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int, vq_strides: tuple[int, ...]):
        super().__init__()
        self.quantizers = nn.ModuleList(
            [VectorQuantize(input_dim, codebook_size, codebook_dim, s) for s in vq_strides]
        )

    def encode(self, z: torch.Tensor, n_q: int | None = None) -> list[torch.Tensor]:
        """Codes of the latents ``z`` ``[B, D, T]``: ``n_q`` levels (all by default), coarsest first."""
        n_q = len(self.quantizers) if n_q is None else n_q
        residual, codes = z, []
        for i, quantizer in enumerate(self.quantizers[:n_q]):
            z_q_i, indices = quantizer(residual)
            codes.append(indices)
            if i + 1 < n_q:
                residual = residual - z_q_i
        return codes

    def decode(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """Latents ``[B, D, T]``: the sum of the levels' contributions, in order (a prefix of the levels
        decodes the coarse levels alone)."""
        levels = cast(Sequence[VectorQuantize], self.quantizers)  # a ModuleList of these
        z_q = levels[0].decode(codes[0])
        for quantizer, indices in zip(levels[1:], codes[1:], strict=False):
            z_q = z_q + quantizer.decode(indices)
        return z_q
