"""Shared helpers of the Mimi tests: a small config, test signals, streaming loops and the near-tie check."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from rvqkit.mimi import MimiConfig, MimiModel

SR = 24000
HOP = 1920

#: A small Mimi (same structure, fewer filters, layers and entries) so that most tests take well under a
#: second; its 20-frame (0.8 s) attention window makes 1-3 s signals exercise the window mask and the
#: streaming cache's trimming, which the published 250-frame (10 s) window reaches only past 10 s.
SMALL = MimiConfig(
    num_filters=8,
    hidden_size=32,
    num_hidden_layers=2,
    intermediate_size=64,
    num_attention_heads=4,
    head_dim=8,
    codebook_dim=16,
    upsample_groups=32,
    num_quantizers=16,
    codebook_size=128,
    sliding_window=20,
)

KINDS = ("noise", "sine", "speech")


def signal(kind: str, n: int, seed: int = 0, channels: int = 1) -> torch.Tensor:
    """``[1, channels, n]`` float32 test audio: white noise, a pure tone, or a speech-like signal (a
    gliding harmonic source under a 4 Hz syllable envelope, with breath noise)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / SR
    if kind == "noise":
        x = 0.3 * torch.randn(channels, n, generator=gen, dtype=torch.float64)
    elif kind == "sine":
        x = 0.5 * torch.sin(2 * math.pi * (220 + 40 * seed) * t).expand(channels, n)
    elif kind == "speech":
        f0 = 120 + 30 * torch.sin(2 * math.pi * 1.5 * t)
        phase = 2 * math.pi * torch.cumsum(f0, 0) / SR
        voiced = sum(torch.sin(h * phase) / h for h in range(1, 12))
        envelope = 0.5 * (1 + torch.sin(2 * math.pi * 4 * t)) ** 2 / 4
        breath = 0.02 * torch.randn(channels, n, generator=gen, dtype=torch.float64)
        x = 0.4 * envelope * voiced + breath
    else:
        raise ValueError(kind)
    return x.float()[None]


def stream_encode(
    model: MimiModel, x: torch.Tensor, sizes: Iterable[int], n_q: int | None = None
) -> torch.Tensor:
    """Codes of ``x`` pushed through :meth:`MimiModel.encode_step` in chunks of ``sizes`` samples (the
    rest in the final call)."""
    state = model.init_state(x.shape[0])
    out, pos = [], 0
    with torch.inference_mode():
        for n in sizes:
            if pos >= x.shape[-1]:
                break
            out.append(model.encode_step(x[..., pos : pos + n], state, n_q=n_q))
            pos += n
        out.append(model.encode_step(x[..., pos:], state, final=True, n_q=n_q))
    return torch.cat(out, dim=-1)


def stream_latent(
    model: MimiModel, x: torch.Tensor, sizes: Iterable[int], n_q: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(latent, codes) of ``x`` streamed in chunks of ``sizes`` samples: :meth:`MimiModel.encode_step`'s
    two halves (``latent_step``, then the quantizer on the new frames), keeping the latent too."""
    state = model.init_state(x.shape[0])
    latents, pos = [], 0
    with torch.inference_mode():
        for n in sizes:
            if pos >= x.shape[-1]:
                break
            latents.append(model.latent_step(x[..., pos : pos + n], state))
            pos += n
        latents.append(model.latent_step(x[..., pos:], state, final=True))
        latent = torch.cat(latents, dim=-1)
        n_q = n_q or model.config.num_quantizers
        codes = torch.cat([model.quantizer.encode(part, n_q) for part in latents if part.shape[-1]], -1)
    return latent, codes


def stream_decode(model: MimiModel, codes: torch.Tensor, sizes: Iterable[int]) -> torch.Tensor:
    state = model.init_state(codes.shape[0])
    out, pos = [], 0
    with torch.inference_mode():
        for n in sizes:
            if pos >= codes.shape[-1]:
                break
            out.append(model.decode_step(codes[..., pos : pos + n], state))
            pos += n
        out.append(model.decode_step(codes[..., pos:], state, final=True))
    return torch.cat(out, dim=-1)


@torch.inference_mode()
def differing_codes_are_near_ties(
    model: MimiModel, latent: torch.Tensor, a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4
) -> tuple[int, list[float]]:
    """Check that codes ``a`` (computed from ``latent``) and ``b`` (from a latent within float rounding of
    it) differ only where ``latent`` sits within rounding of a tie.

    For each frame whose codes differ, take the first codebook k where they do (both agree before k,
    so the residual is the same), and compare the distances from ``latent``'s residual to the two
    entries chosen: a near-tie when they differ by less than ``rel`` relative. Returns the number of
    differing frames and the relative gap of each (all must be below ``rel`` for the check to hold).
    """
    q = model.quantizer
    gaps: list[float] = []
    frames = (a != b).any(dim=1).nonzero().tolist()
    for row, t in frames:
        k = int((a[row, :, t] != b[row, :, t]).nonzero()[0])
        rvq, j = (q.semantic, k) if k < q.n_semantic else (q.acoustic, k - q.n_semantic)
        residual = rvq.input_proj(latent[row : row + 1, :, t : t + 1])[0, :, 0]
        first = 0 if rvq is q.semantic else q.n_semantic
        for i in range(first, k):
            residual = residual - rvq.codebooks[i - first][a[row, i, t]]
        da = torch.dist(residual, rvq.codebooks[j][a[row, k, t]])
        db = torch.dist(residual, rvq.codebooks[j][b[row, k, t]])
        gaps.append(float((da - db).abs() / da.clamp(min=1e-12)))
    return len(frames), gaps
