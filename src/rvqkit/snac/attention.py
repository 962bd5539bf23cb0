"""SNAC's local multi-head attention (``snac/attention.py``, snac 1.2.1).

The sequence is cut into non-overlapping windows of ``window_size`` frames, aligned to frame 0; each
window attends to itself only (bidirectional, no mask), with rotary position embeddings restarted at
position 0 in every window (xpos off). There is no feed-forward block: ``x + to_out(attn(norm(x)))``.
The tensor views (reshape/permute) are the ones einops builds in the reference, so that
``scaled_dot_product_attention`` receives the same layouts and gives the same floats.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

HEAD_DIM = 64


class RotaryEmbedding(nn.Module):
    """Rotary frequencies of one window: ``inv_freq = 1 / 10000^(arange(0, d, 2) / d)`` (a buffer, saved in
    snac's state dict as ``rel_pos.inv_freq``)."""

    inv_freq: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` of positions ``0..n-1``, each ``[n, dim]``."""
        t = torch.arange(n, device=self.inv_freq.device).type_as(self.inv_freq)
        freqs = torch.outer(t, self.inv_freq)  # one product per entry, as the reference's einsum
        freqs = torch.cat((freqs, freqs), dim=-1)
        return freqs.cos(), freqs.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension's halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class LocalMHA(nn.Module):
    """Windowed self-attention over ``[B, dim, T]``; ``T`` must be a multiple of ``window_size``."""

    def __init__(self, dim: int, window_size: int, dim_head: int = HEAD_DIM) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.heads = dim // dim_head
        self.dim_head = dim_head
        self.window_size = window_size
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.rel_pos = RotaryEmbedding(dim_head)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        n = self.window_size
        w = t // n
        h = self.norm(x.transpose(1, 2))

        def split(z: torch.Tensor) -> torch.Tensor:  # "b (w n) (h d) -> b h w n d"
            return z.reshape(b, w, n, self.heads, self.dim_head).permute(0, 3, 1, 2, 4)

        q, k, v = (split(z) for z in self.to_qkv(h).chunk(3, dim=-1))
        cos, sin = self.rel_pos(n)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.permute(0, 2, 3, 1, 4).reshape(b, t, c)  # "b h w n d -> b (w n) (h d)"
        return self.to_out(out).transpose(1, 2) + x
