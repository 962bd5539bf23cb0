"""The EnCodec network: encoder, quantizer, decoder, and the 48 kHz model's segmenting.

Tensors here are already at the model's sample rate and channel count; :class:`rvqkit.Codec` does the
conversion from user audio. Shapes: audio ``[B, channels, samples]``, codes ``[B, n_q, frames]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import CodecConfig
from .nn.seanet import SEANetDecoder, SEANetEncoder
from .quant.rvq import ResidualVectorQuantizer


def segment_bounds(cfg: CodecConfig, length: int) -> list[tuple[int, int]]:
    """(start, end) sample offsets of the segments a ``length``-sample signal is cut into."""
    if cfg.segment_length is None:
        return [(0, length)]
    stride = cfg.segment_stride
    assert stride is not None
    return [(o, min(o + cfg.segment_length, length)) for o in range(0, length, stride)]


def frames_for_length(cfg: CodecConfig, length: int) -> int:
    """Code frames for a signal of ``length`` samples (summed over its segments)."""
    return sum(math.ceil((e - s) / cfg.hop_length) for s, e in segment_bounds(cfg, length))


def linear_overlap_add(frames: list[torch.Tensor], stride: int) -> torch.Tensor:
    """Overlap-add segments with triangular weights, normalised by the summed weight (as the references)."""
    first = frames[0]
    total = stride * (len(frames) - 1) + frames[-1].shape[-1]
    n = first.shape[-1]
    t = torch.linspace(0, 1, n + 2, device=first.device, dtype=first.dtype)[1:-1]
    weight = 0.5 - (t - 0.5).abs()
    out = torch.zeros(*first.shape[:-1], total, device=first.device, dtype=first.dtype)
    sum_weight = torch.zeros(total, device=first.device, dtype=first.dtype)
    for i, frame in enumerate(frames):
        off, n = i * stride, frame.shape[-1]
        out[..., off : off + n] += weight[:n] * frame
        sum_weight[off : off + n] += weight[:n]
    return out / sum_weight


class EncodecModel(nn.Module):
    """SEANet encoder → residual vector quantizer → SEANet decoder, for one :class:`CodecConfig`."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SEANetEncoder(cfg)
        self.quantizer = ResidualVectorQuantizer(cfg.num_quantizers, cfg.codebook_size, cfg.hidden_size)
        self.decoder = SEANetDecoder(cfg)

    # -- one segment -------------------------------------------------------------------------------
    def segment_scale(self, x: torch.Tensor) -> torch.Tensor | None:
        """RMS of the mono mix of a segment ``[B, C, T]`` plus 1e-8, shape ``[B, 1]``; None if not normalising."""
        if not self.cfg.normalize:
            return None
        mono = x.mean(dim=1, keepdim=True)
        return (mono.pow(2).mean(dim=2, keepdim=True).sqrt() + 1e-8).view(-1, 1)

    def embed_segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings ``[B, D, frames]`` of one segment, and its scale."""
        scale = self.segment_scale(x)
        if scale is not None:
            x = x / scale.view(-1, 1, 1)
        return self.encoder(x), scale

    def synthesize(self, embeddings: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Audio ``[B, C, frames * hop]`` of one segment from embeddings, rescaled if a scale is given."""
        out = self.decoder(embeddings)
        return out if scale is None else out * scale.view(-1, 1, 1)

    # -- whole signals ---------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, n_q: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes ``[B, n_q, frames]`` for audio ``[B, C, T]`` and, when normalising, scales ``[B, segments]``."""
        codes, scales = [], []
        for start, end in segment_bounds(self.cfg, x.shape[-1]):
            emb, scale = self.embed_segment(x[..., start:end])
            codes.append(self.quantizer.encode(emb, n_q))
            scales.append(scale)
        scale_t = torch.cat(scales, dim=1) if self.cfg.normalize else None  # type: ignore[arg-type]
        return torch.cat(codes, dim=-1), scale_t

    def decode(self, codes: torch.Tensor, scales: torch.Tensor | None, length: int) -> torch.Tensor:
        """Audio ``[B, C, length]`` from codes ``[B, n_q, frames]`` of a ``length``-sample signal."""
        outs, f0 = [], 0
        for i, (start, end) in enumerate(segment_bounds(self.cfg, length)):
            nf = math.ceil((end - start) / self.cfg.hop_length)
            emb = self.quantizer.decode(codes[..., f0 : f0 + nf])
            outs.append(self.synthesize(emb, None if scales is None else scales[:, i]))
            f0 += nf
        if len(outs) == 1:
            return outs[0][..., :length]
        assert self.cfg.segment_stride is not None
        return linear_overlap_add(outs, self.cfg.segment_stride)[..., :length]
