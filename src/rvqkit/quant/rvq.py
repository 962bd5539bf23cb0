"""Residual vector quantizer: embeddings ``[B, D, frames]`` to codes ``[B, n_q, frames]`` and back.

Codebook k quantizes what codebooks 0..k-1 left over, so the first n_q codes of a frame are exactly the
codes a smaller bandwidth would give: coarse decoding is decoding a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CodesError


@dataclass
class LayerStep:
    """One quantizer layer's work: its indices ``[B, frames]`` and the residual ``[B, D, frames]`` after it."""

    indices: torch.Tensor
    residual: torch.Tensor


class ResidualVectorQuantizer(nn.Module):
    """``num_codebooks`` Euclidean codebooks of ``codebook_size`` entries of dimension ``dim``."""

    def __init__(self, num_codebooks: int = 32, codebook_size: int = 1024, dim: int = 128) -> None:
        super().__init__()
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.dim = dim
        self.codebooks: torch.Tensor  # declared for the type checker: buffers are typed Tensor | Module
        self.register_buffer("codebooks", torch.zeros(num_codebooks, codebook_size, dim))

    def quantize_layer(self, k: int, residual: torch.Tensor) -> torch.Tensor:
        """Nearest entry of codebook ``k`` for each frame of ``residual`` ``[B, D, T]`` → ``[B, T]``."""
        b, d, t = residual.shape
        return self._nearest(k, residual.permute(0, 2, 1).reshape(-1, d)).view(b, t)

    def _nearest(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Nearest entry of codebook ``k`` for each row of ``x`` ``[N, D]`` (contiguous) → ``[N]``."""
        embed = self.codebooks[k].t()
        # The references' expression -(|x|² - 2 x·e + |e|²) and its max, evaluated in place with the same
        # roundings (a - 2m == a + (-2m) exactly) and argmin of the negation (first index on ties, as max).
        dist = x @ embed
        dist.mul_(-2).add_(x.pow(2).sum(1, keepdim=True)).add_(embed.pow(2).sum(0, keepdim=True))
        return dist.min(dim=-1).indices

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
        """Codes ``[B, n_q, frames]`` (int64) for embeddings ``[B, D, frames]``.

        Same arithmetic as :meth:`steps`, with the residual kept frame-major ``[B * frames, D]`` so that
        no layer transposes it again.
        """
        b, d, t = embeddings.shape
        residual = embeddings.permute(0, 2, 1).reshape(-1, d)
        codes = residual.new_empty((n_q, b * t), dtype=torch.long)
        for k in range(n_q):
            codes[k] = self._nearest(k, residual)
            if k + 1 < n_q:
                residual = residual - nn.functional.embedding(codes[k], self.codebooks[k])
        return codes.view(n_q, b, t).permute(1, 0, 2).contiguous()

    def check_codes(self, codes: torch.Tensor) -> None:
        """Raise :class:`~rvqkit.errors.CodesError` unless ``codes`` fit these codebooks (see :meth:`decode`)."""
        if not isinstance(codes, torch.Tensor) or codes.ndim != 3:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise CodesError(f"codes must be a tensor [batch, n_q, frames], got {shape}")
        if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
            raise CodesError(f"codes must be integers, got dtype {codes.dtype}")
        if not 1 <= codes.shape[1] <= self.num_codebooks:
            raise CodesError(f"codes hold {codes.shape[1]} codebooks; these have 1 to {self.num_codebooks}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise CodesError(f"codes out of range [0, {self.codebook_size})")

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the codebook entries for codes ``[B, n_q, frames]`` → embeddings ``[B, D, frames]``.

        Entries are added in codebook order starting from zero, as the references do (same roundings).
        Codes that are not integers ``[B, n_q, frames]`` with ``n_q ≤ num_codebooks`` and values in
        ``[0, codebook_size)`` raise :class:`~rvqkit.errors.CodesError`.
        """
        self.check_codes(codes)
        b, n_q, t = codes.shape
        out = torch.zeros(b, t, self.dim, device=codes.device, dtype=self.codebooks.dtype)
        for k in range(n_q):
            out.add_(nn.functional.embedding(codes[:, k], self.codebooks[k]))
        return out.permute(0, 2, 1)
