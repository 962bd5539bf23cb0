"""DAC's residual quantizer: factorized, L2-normalized codebooks with 1x1 projections.

Codebook ``k`` projects the residual ``[B, latent_dim, T]`` to ``codebook_dim`` (8) channels
(``in_proj``), picks the entry nearest in cosine terms (both sides L2-normalized), and projects the
*un-normalized* entry back (``out_proj``); the residual loses that projection before codebook ``k + 1``.
The first ``n_q`` codes of a frame are the codes ``n_q`` codebooks give: a smaller bitrate is a prefix.

The distance. descript's ``VectorQuantize.decode_latents`` (the authority for DAC) scores entry ``c``
of a normalized encoding ``e`` as ``-(|e|² - 2 e·c + |c|²)`` and takes the max; ``transformers``'
``DacVectorQuantize.decode_latents`` computes ``-(|e|² - 2 e·c) + |c|²``: the sign of ``|c|²`` is
flipped. ``|c|² = 1`` up to rounding for normalized entries, so the two pick different entries only
at near-ties. rvqkit computes descript's formula by default and ``transformers``' when asked
(``distance="transformers"``), each with the reference's own roundings, so either can be matched
exactly; ``tests/test_dac_parity.py`` counts where they differ.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import BandwidthError, CodesError

Distance = Literal["descript", "transformers"]
DISTANCES: tuple[str, ...] = ("descript", "transformers")


class VectorQuantize(nn.Module):
    """One codebook: ``in_proj`` (latent → codebook_dim), ``codebook`` entries, ``out_proj`` (back)."""

    def __init__(self, latent_dim: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.in_proj = nn.Conv1d(latent_dim, codebook_dim, kernel_size=1)
        self.out_proj = nn.Conv1d(codebook_dim, latent_dim, kernel_size=1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def nearest(self, z_e: torch.Tensor, distance: Distance = "descript") -> torch.Tensor:
        """Indices ``[B, T]`` of the entries nearest to projected latents ``z_e`` ``[B, codebook_dim, T]``.

        The references' arithmetic: ``e·c`` as ``(2 e) @ cᵀ`` (scaling by 2 is exact), the terms summed
        left to right. descript's ``a - m + c`` is evaluated as ``(-m + a) + c`` in place (``a - m`` and
        ``a + (-m)`` are the same IEEE operation), and its max of the negation as the min (the first
        index on ties, as max). transformers' ``-(a - m) + c`` is ``(m - a) + c``, then the max.
        """
        b, d, t = z_e.shape
        enc = F.normalize(z_e.permute(0, 2, 1).reshape(b * t, d))
        book = F.normalize(self.codebook.weight)
        a = enc.pow(2).sum(1, keepdim=True)
        m = 2 * enc @ book.t()
        c = book.pow(2).sum(1, keepdim=True).t()
        if distance == "descript":
            idx = m.neg_().add_(a).add_(c).min(1).indices
        else:
            idx = m.sub_(a).add_(c).max(1).indices
        return idx.view(b, t)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Un-normalized entries ``[B, codebook_dim, T]`` for ``indices`` ``[B, T]`` (a transposed view,
        as the references', so that ``out_proj`` sees the same memory layout)."""
        return F.embedding(indices, self.codebook.weight).transpose(1, 2)


class DacQuantizer(nn.Module):
    """``num_codebooks`` :class:`VectorQuantize` applied to what the previous ones left."""

    def __init__(self, num_codebooks: int, latent_dim: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.quantizers = nn.ModuleList(
            VectorQuantize(latent_dim, codebook_size, codebook_dim) for _ in range(num_codebooks)
        )

    @property
    def num_codebooks(self) -> int:
        return len(self.quantizers)

    def check_n_q(self, n_q: int) -> None:
        if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= self.num_codebooks:
            raise BandwidthError(f"n_q must be an integer from 1 to {self.num_codebooks}, got {n_q!r}")

    def encode(self, z: torch.Tensor, n_q: int, distance: Distance = "descript") -> torch.Tensor:
        """Codes ``[B, n_q, T]`` (int64) for latents ``z`` ``[B, latent_dim, T]``.

        The residual loses ``out_proj(z_e + (z_q - z_e))``, the references' straight-through value (not
        ``out_proj(z_q)``: its roundings differ, and they reach the next codebooks' choices).
        """
        self.check_n_q(n_q)
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        residual = z
        codes = []
        for k in range(n_q):
            q = cast(VectorQuantize, self.quantizers[k])
            z_e = q.in_proj(residual)
            idx = q.nearest(z_e, distance)
            codes.append(idx)
            if k + 1 < n_q:
                z_q = q.lookup(idx)
                residual = residual - q.out_proj(z_e + (z_q - z_e))
        return torch.stack(codes, dim=1)

    def check_codes(self, codes: torch.Tensor) -> None:
        """Raise :class:`CodesError` unless ``codes`` are integers ``[B, n_q, frames]`` that fit these
        codebooks (``1 <= n_q <= num_codebooks``, values in ``[0, codebook_size)``)."""
        if not isinstance(codes, torch.Tensor) or codes.ndim != 3:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise CodesError(f"codes must be a tensor [batch, n_q, frames], got {shape}")
        if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
            raise CodesError(f"codes must be integers, got dtype {codes.dtype}")
        if not 1 <= codes.shape[1] <= self.num_codebooks:
            raise CodesError(
                f"codes hold {codes.shape[1]} codebooks; this model has 1 to {self.num_codebooks}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise CodesError(f"codes out of range [0, {self.codebook_size})")

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, latent_dim, frames]``: the sum of ``out_proj(entry)`` over the codebooks, in
        codebook order (descript's ``from_codes``, the same roundings)."""
        self.check_codes(codes)
        codes = codes.long()
        q = cast(VectorQuantize, self.quantizers[0])  # the ModuleList holds VectorQuantize
        z = q.out_proj(q.lookup(codes[:, 0]))
        for k in range(1, codes.shape[1]):
            q = cast(VectorQuantize, self.quantizers[k])
            z.add_(q.out_proj(q.lookup(codes[:, k])))
        return z
