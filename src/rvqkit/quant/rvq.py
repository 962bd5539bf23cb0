"""Residual vector quantizer: embeddings ``[B, D, frames]`` to codes ``[B, n_q, frames]`` and back.

Codebook k quantizes what codebooks 0..k-1 left over, so the first n_q codes of a frame are exactly the
codes a smaller bandwidth would give: coarse decoding is decoding a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerStep:
    """One quantizer layer's work: its indices ``[B, frames]`` and the residual ``[B, D, frames]`` after it."""

    indices: torch.Tensor
    residual: torch.Tensor


class ResidualVectorQuantizer(nn.Module):
    """``num_quantizers`` Euclidean codebooks of ``codebook_size`` entries of dimension ``dim``."""

    def __init__(self, num_quantizers: int = 32, codebook_size: int = 1024, dim: int = 128) -> None:
        super().__init__()
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.dim = dim
        self.register_buffer("codebooks", torch.zeros(num_quantizers, codebook_size, dim))

    def quantize_layer(self, k: int, residual: torch.Tensor) -> torch.Tensor:
        """Nearest entry of codebook ``k`` for each frame of ``residual`` ``[B, D, T]`` → ``[B, T]``."""
        b, d, t = residual.shape
        x = residual.permute(0, 2, 1).reshape(-1, d)
        embed = self.codebooks[k].t()
        # Same expression as the references, so that near ties break the same way.
        dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices.view(b, t)

    def lookup(self, k: int, indices: torch.Tensor) -> torch.Tensor:
        """Entries of codebook ``k`` for ``indices`` ``[B, T]`` → ``[B, D, T]``."""
        return nn.functional.embedding(indices, self.codebooks[k]).permute(0, 2, 1)

    def steps(self, embeddings: torch.Tensor, n_q: int) -> list[LayerStep]:
        """Quantize layer by layer, keeping each layer's indices and the residual after it."""
        residual = embeddings
        out = []
        for k in range(n_q):
            indices = self.quantize_layer(k, residual)
            residual = residual - self.lookup(k, indices)
            out.append(LayerStep(indices, residual))
        return out

    def encode(self, embeddings: torch.Tensor, n_q: int) -> torch.Tensor:
        """Codes ``[B, n_q, frames]`` (int64) for embeddings ``[B, D, frames]``."""
        return torch.stack([s.indices for s in self.steps(embeddings, n_q)], dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the codebook entries for codes ``[B, n_q, frames]`` → embeddings ``[B, D, frames]``."""
        out = torch.zeros((), device=codes.device)
        for k in range(codes.shape[1]):
            out = out + self.lookup(k, codes[:, k])
        return out
