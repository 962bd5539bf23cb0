"""Mimi's causal transformers (one after the SEANet encoder, one before the decoder), offline and streaming.

Pre-LayerNorm layers: ``x + scale_1 * attn(LN_1(x))`` then ``x + scale_2 * fc2(gelu(fc1(LN_2(x))))`` with
exact (erf) GELU, no biases, rotary position embeddings and causal attention over a window of
``sliding_window`` frames (the query and the 249 frames before it).

The arithmetic follows transformers' ``MimiTransformerModel`` (5.24) op for op: separate q/k/v products,
RoPE in the "rotate half" layout (moshi's interleaved layout is converted at load time by permuting the
q and k rows, as transformers' converter does), and ``scaled_dot_product_attention`` called as
transformers calls it: ``is_causal=True`` without a mask up to ``sliding_window`` frames, a boolean
window mask beyond.

Streaming keeps, per layer, the keys and values of the last ``sliding_window - 1`` frames (all a later
query can see), in time order, and each stream's position for RoPE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .config import MimiConfig


@dataclass
class KVState:
    """One attention layer's cache: keys and values ``[B, heads, n, head_dim]`` (after RoPE) of the last
    ``n <= sliding_window - 1`` frames, oldest first; None before the first frame."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None


@dataclass
class TransformerState:
    """Streaming state: per-layer caches and each stream's next position ``[B]`` (frames seen so far)."""

    layers: list[KVState]
    positions: torch.Tensor


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class MimiRotary(nn.Module):
    """cos/sin tables of the rotary embedding, computed as transformers' ``MimiRotaryEmbedding``."""

    inv_freq: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        dim = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions`` ``[P, T]`` (P = 1 or batch) → cos, sin ``[P, 1, T, head_dim]``."""
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[:, None], emb.sin()[:, None]


class MimiAttention(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        d, h = cfg.hidden_size, cfg.num_attention_heads
        self.heads, self.head_dim = h, cfg.head_dim
        self.scaling = 1 / math.sqrt(cfg.head_dim)
        self.q_proj = nn.Linear(d, h * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(d, h * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(d, h * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(h * cfg.head_dim, d, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        causal: bool,
        cache: KVState | None = None,
        keep: int = 0,
    ) -> torch.Tensor:
        """``x`` ``[B, T, D]``; ``mask``: boolean ``[.., T, n + T]`` (True = attend), or None for plain causal
        attention (``causal_mask``) or none at all. With a ``cache``, its keys come first and the last
        ``keep`` frames are kept."""
        b, t, _ = x.shape
        shape = (b, t, -1, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            if cache.keys is not None:
                k = torch.cat([cache.keys, k], dim=2)
                v = torch.cat([cache.values, v], dim=2)  # type: ignore[list-item]  # set with keys
            n = min(keep, k.shape[2])
            cache.keys, cache.values = k[:, :, k.shape[2] - n :], v[:, :, v.shape[2] - n :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling, is_causal=causal)
        return self.o_proj(out.transpose(1, 2).contiguous().reshape(b, t, -1))


class MimiMLP(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MimiLayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), 0.01))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


class MimiTransformerLayer(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        self.self_attn = MimiAttention(cfg)
        self.mlp = MimiMLP(cfg)
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.self_attn_layer_scale = MimiLayerScale(cfg.hidden_size)
        self.mlp_layer_scale = MimiLayerScale(cfg.hidden_size)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        causal: bool,
        cache: KVState | None = None,
        keep: int = 0,
    ) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x), cos, sin, mask, causal, cache, keep)
        x = x + self.self_attn_layer_scale(h)
        return x + self.mlp_layer_scale(self.mlp(self.post_attention_layernorm(x)))


class MimiTransformer(nn.Module):
    """``[B, T, hidden_size]`` to the same shape, causal with a ``sliding_window``-frame context."""

    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        self.window = cfg.sliding_window
        self.layers = nn.ModuleList(MimiTransformerLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.rotary = MimiRotary(cfg)

    def window_mask(self, t: int, past: int, device: torch.device) -> torch.Tensor:
        """Boolean ``[t, past + t]``: query i (at key index past + i) sees keys ``j`` with
        ``0 <= past + i - j < window`` (transformers' sliding-window causal mask)."""
        q = torch.arange(past, past + t, device=device)[:, None]
        k = torch.arange(past + t, device=device)[None, :]
        return (k <= q) & (k > q - self.window)

    def _offline_mask(self, b: int, t: int, device: torch.device) -> tuple[torch.Tensor | None, bool]:
        """(mask, is_causal) as transformers: no mask (is_causal) while the window covers all ``t``
        frames, else a boolean window mask expanded over the batch."""
        if t <= self.window:
            return None, True
        return self.window_mask(t, 0, device).expand(b, 1, t, t), False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        cos, sin = self.rotary(torch.arange(t, device=x.device)[None])
        mask, causal = self._offline_mask(b, t, x.device)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, causal)
        return x

    def init_state(self, batch_size: int, device: torch.device | None = None) -> TransformerState:
        return TransformerState(
            [KVState() for _ in self.layers], torch.zeros(batch_size, dtype=torch.long, device=device)
        )

    def step(self, x: torch.Tensor, state: TransformerState) -> torch.Tensor:
        """The next ``T`` frames ``[B, T, D]`` of each stream (T may be 0), with the cached past.

        A first step is computed exactly as :meth:`forward` (same calls on the same shapes), so a whole
        signal given in one step gives the offline floats; later steps attend over the cache with an
        explicit window mask (no mask when one query sees all its keys).
        """
        b, t, _ = x.shape
        if t == 0:
            return x
        cache = state.layers[0]
        past = 0 if cache.keys is None else cache.keys.shape[2]
        positions = state.positions[:, None] + torch.arange(t, device=x.device)
        if past == 0:  # a fresh stream: forward's calls (RoPE positions broadcast elementwise, same floats)
            mask, causal = self._offline_mask(b, t, x.device)
        else:
            full = self.window_mask(t, past, x.device)
            mask, causal = (None, False) if bool(full.all()) else (full, False)
        cos, sin = self.rotary(positions)
        keep = self.window - 1
        for layer, st in zip(self.layers, state.layers, strict=True):
            x = layer(x, cos, sin, mask, causal, st, keep)
        state.positions = state.positions + t
        return x
