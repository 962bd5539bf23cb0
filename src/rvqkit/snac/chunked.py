"""Long files through SNAC in chunks with overlap: bounded memory, not streaming.

SNAC is not causal (centred convolutions, bidirectional attention windows), so there is no exact
streaming. Long inputs are cut into chunks on a grid of :func:`chunk_multiple` samples (the padding
multiple: frames of every level and attention windows line up with the whole-file computation); each
chunk is encoded with ``overlap`` samples of real signal on both sides, and only its own frames are
kept. With the default overlap (at least the encoder's receptive field, rounded up to the grid) every
kept code sees the same signal as in the whole-file run; the floats can still round differently
(convolution kernels block by width), so a code at a near-tie may flip. docs/snac.md gives the measured
counts. Decoding works the same way on code frames, with the noise off.

Memory: the whole-file run holds activations of the full length (the 24 kHz encoder's first layers are
48-96 channels at the audio rate: ~2.8 GB per tensor for 10 minutes); chunks bound them to a chunk's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import AudioError, CodesError
from .attention import LocalMHA
from .config import SnacConfig
from .model import SnacModel

DEFAULT_CHUNK_SECONDS = 10.0


def chunk_multiple(config: SnacConfig) -> int:
    """Chunk boundaries fall on multiples of this many samples: ``hop_length * lcm(vq_strides...,
    attn_window_size or 1)`` (equal to :attr:`SnacConfig.pad_multiple` for the published models)."""
    return config.hop_length * math.lcm(*config.vq_strides, config.attn_window_size or 1)


def _conv_context(layers: nn.Module, unit: float) -> tuple[float, float]:
    """(left, right) context, in units of the input's samples, of the convolutions in ``layers`` in order;
    ``unit`` is the size of one input step of the first layer in those units."""
    left = right = 0.0
    for m in layers.modules():
        if isinstance(m, nn.ConvTranspose1d):
            s, k = m.stride[0], m.kernel_size[0]
            reach = math.ceil(k / s) * unit  # an output reads at most ceil(k / s) inputs on either side
            left, right, unit = left + reach, right + reach, unit / s
        elif isinstance(m, nn.Conv1d):
            k_eff = (m.kernel_size[0] - 1) * m.dilation[0] + 1
            assert not isinstance(m.padding, str)  # SNAC pads by integers throughout
            p = m.padding[0]
            left, right = left + p * unit, right + (k_eff - 1 - p) * unit
            unit *= m.stride[0]
    return left, right


def encoder_context(model: SnacModel) -> int:
    """Samples of signal on either side that a code frame's value can depend on (an upper bound): the
    encoder's convolutions, plus one attention window when there is attention."""
    left, right = _conv_context(model.encoder, 1.0)
    # The encoder has LocalMHA exactly when attn_window_size is set (None: no attention, SnacConfig).
    window = model.config.attn_window_size or 0
    attn = (
        window * model.config.hop_length
        if any(isinstance(m, LocalMHA) for m in model.encoder.modules())
        else 0
    )
    return math.ceil(max(left, right)) + attn


def decoder_context(model: SnacModel) -> int:
    """Code frames on either side that a decoded sample can depend on (an upper bound)."""
    left, right = _conv_context(model.decoder, 1.0)
    window = model.config.attn_window_size or 0
    return math.ceil(max(left, right)) + window + 1


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def chunk_plan(model: SnacModel, length: int, chunk: int | None = None, overlap: int | None = None):
    """The chunks of a ``length``-sample input: a list of ``(start, end, a, b)`` in samples of the padded
    input, where ``[start, end)`` is the chunk's own part and ``[a, b)`` what it encodes (with overlap).
    ``chunk`` and ``overlap`` (samples) are rounded up to :func:`chunk_multiple`; defaults: 10 s, and
    :func:`encoder_context`."""
    m = chunk_multiple(model.config)
    chunk = (
        int(DEFAULT_CHUNK_SECONDS * model.config.sampling_rate)
        if chunk is None
        else _check_positive("chunk", chunk)
    )
    overlap = encoder_context(model) if overlap is None else overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap must be an integer >= 0, got {overlap!r}")
    chunk, overlap = _round_up(chunk, m), _round_up(overlap, m)
    total = _round_up(model.padded_length(length), m)
    plan = []
    for start in range(0, total, chunk):
        end = min(start + chunk, total)
        plan.append((start, end, max(0, start - overlap), min(total, end + overlap)))
    return plan


@torch.inference_mode()
def encode_chunked(
    model: SnacModel,
    x: torch.Tensor,
    chunk: int | None = None,
    overlap: int | None = None,
    n_q: int | None = None,
) -> list[torch.Tensor]:
    """Codes of audio ``x`` ``[B, 1, samples]`` computed chunk by chunk (see the module's notes): the same
    shapes as :meth:`SnacModel.encode`, and the same codes except where a near-tie rounds differently.
    ``chunk`` and ``overlap`` in samples (rounded up to :func:`chunk_multiple`)."""
    x = model._check_audio(x)
    n_q = model._check_n_q(n_q)
    cfg = model.config
    plan = chunk_plan(model, x.shape[-1], chunk, overlap)
    xp = nn.functional.pad(x.float(), (0, plan[-1][1] - x.shape[-1]))
    units = [cfg.hop_length * s for s in cfg.vq_strides[:n_q]]
    parts: list[list[torch.Tensor]] = [[] for _ in units]
    for start, end, a, b in plan:
        codes = model.quantizer.encode(model.encoder(xp[..., a:b]), n_q)
        for i, (c, u) in enumerate(zip(codes, units, strict=True)):
            parts[i].append(c[:, (start - a) // u : (end - a) // u])
    frames = model.level_frames(x.shape[-1])
    return [torch.cat(p, dim=-1)[:, :f] for p, f in zip(parts, frames, strict=False)]


@torch.inference_mode()
def decode_chunked(
    model: SnacModel,
    codes: Sequence[torch.Tensor],
    chunk_frames: int | None = None,
    overlap_frames: int | None = None,
    length: int | None = None,
) -> torch.Tensor:
    """Audio ``[B, 1, samples]`` of ``codes`` decoded chunk by chunk with the noise off (see the module's
    notes); ``chunk_frames`` / ``overlap_frames`` in finest frames, rounded up to the chunk grid (defaults:
    10 s, and :func:`decoder_context`); cut to ``length`` samples if given."""
    checked = model.check_codes(codes)
    cfg = model.config
    unit = chunk_multiple(cfg) // cfg.hop_length  # finest frames per grid step
    frames = checked[0].shape[1] * cfg.vq_strides[0]
    if frames % unit:
        raise CodesError(f"chunked decoding needs a multiple of {unit} finest frames, got {frames}")
    chunk = _round_up(
        _check_positive("chunk_frames", chunk_frames)
        if chunk_frames is not None
        else math.ceil(DEFAULT_CHUNK_SECONDS * cfg.frame_rate),
        unit,
    )
    overlap = decoder_context(model) if overlap_frames is None else overlap_frames
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap_frames must be an integer >= 0, got {overlap!r}")
    overlap = _round_up(overlap, unit)
    hop = cfg.decoder_hop
    out = []
    for start in range(0, frames, chunk):
        end = min(start + chunk, frames)
        a, b = max(0, start - overlap), min(frames, end + overlap)
        piece = [c[:, a // s : b // s] for c, s in zip(checked, cfg.vq_strides, strict=False)]
        audio = model.decoder(model.quantizer.decode(piece), None)
        out.append(audio[..., (start - a) * hop : (end - a) * hop])
    audio = torch.cat(out, dim=-1)
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise AudioError(f"length must be an integer >= 0 (samples), got {length!r}")
        audio = audio[..., :length]
    return audio
