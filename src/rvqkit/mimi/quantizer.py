"""Mimi's split residual vector quantizer: a semantic RVQ (the first codebook) and an acoustic RVQ (the
rest), each with its own 1x1 input and output projections, both quantizing the same latent.

Nearest entries are found with ``torch.cdist(...).argmin`` exactly as transformers and moshi do (for
codebooks over 25 entries ``cdist`` uses its matrix-product expansion, whose roundings differ from
rvqkit's EnCodec quantizer's), so that codes are the references' codes, ties and near-ties included.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import CodesError
from .config import MimiConfig


class MimiRVQ(nn.Module):
    """``num_quantizers`` codebooks ``[size, dim]`` on the residual of ``input_proj(latent)``."""

    codebooks: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, cfg: MimiConfig, num_quantizers: int) -> None:
        super().__init__()
        self.num_quantizers = num_quantizers
        self.input_proj = nn.Conv1d(cfg.hidden_size, cfg.codebook_dim, 1, bias=False)
        self.output_proj = nn.Conv1d(cfg.codebook_dim, cfg.hidden_size, 1, bias=False)
        #: Entries of every codebook ``[num_quantizers, size, dim]``: the checkpoints' ``embed_sum /
        #: cluster_usage.clamp(min=1e-5)``, computed once at load time (the references cache the same).
        self.register_buffer("codebooks", torch.zeros(num_quantizers, cfg.codebook_size, cfg.codebook_dim))

    def encode(self, latent: torch.Tensor, n_q: int) -> torch.Tensor:
        """Codes ``[n_q, B, frames]`` of ``latent`` ``[B, hidden, frames]``."""
        residual = self.input_proj(latent)
        b, d, t = residual.shape
        codes = []
        for k in range(n_q):
            flat = residual.permute(0, 2, 1).reshape(-1, d)
            idx = torch.cdist(flat[None], self.codebooks[k][None], p=2)[0].argmin(dim=-1).view(b, t)
            codes.append(idx)
            if k + 1 < n_q:
                residual = residual - nn.functional.embedding(idx, self.codebooks[k]).permute(0, 2, 1)
        return torch.stack(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``output_proj`` of the summed entries of codes ``[B, n, frames]`` → ``[B, hidden, frames]``;
        summed in codebook order from zero, as the references."""
        out: torch.Tensor | None = None
        for k in range(codes.shape[1]):
            e = nn.functional.embedding(codes[:, k], self.codebooks[k]).permute(0, 2, 1)
            out = e if out is None else out + e
        assert out is not None
        return self.output_proj(out)


class MimiSplitRVQ(nn.Module):
    """Codebook 0 from ``semantic``, codebooks 1.. from ``acoustic`` (``num_semantic_quantizers`` = 1 in
    the published model)."""

    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        self.n_semantic = cfg.num_semantic_quantizers
        self.num_quantizers = cfg.num_quantizers
        self.codebook_size = cfg.codebook_size
        self.semantic = MimiRVQ(cfg, cfg.num_semantic_quantizers)
        self.acoustic = MimiRVQ(cfg, cfg.num_quantizers - cfg.num_semantic_quantizers)

    def encode(self, latent: torch.Tensor, n_q: int) -> torch.Tensor:
        """Codes ``[B, n_q, frames]`` (int64) of ``latent`` ``[B, hidden, frames]``, semantic first."""
        codes = self.semantic.encode(latent, min(n_q, self.n_semantic))
        if n_q > self.n_semantic:
            codes = torch.cat([codes, self.acoustic.encode(latent, n_q - self.n_semantic)])
        return codes.transpose(0, 1)

    def check_codes(self, codes: torch.Tensor) -> None:
        """Raise :class:`CodesError` unless ``codes`` are integers ``[B, n_q, frames]`` that fit."""
        if not isinstance(codes, torch.Tensor) or codes.ndim != 3:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise CodesError(f"codes must be a tensor [batch, n_q, frames], got {shape}")
        if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
            raise CodesError(f"codes must be integers, got dtype {codes.dtype}")
        if not 1 <= codes.shape[1] <= self.num_quantizers:
            raise CodesError(f"codes hold {codes.shape[1]} codebooks; Mimi has 1 to {self.num_quantizers}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise CodesError(f"codes out of range [0, {self.codebook_size})")

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, hidden, frames]`` of valid codes ``[B, n_q, frames]`` (see :meth:`check_codes`)."""
        out = self.semantic.decode(codes[:, : self.n_semantic].long())
        if codes.shape[1] > self.n_semantic:
            out = out + self.acoustic.decode(codes[:, self.n_semantic :].long())
        return out
