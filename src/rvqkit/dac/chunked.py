"""Long signals through DAC in overlapping windows, with bounded memory. Not streaming: DAC is not causal.

A DAC code frame depends on about 0.1 s of audio on each side (:attr:`DacModel.receptive_field`), and
the whole-signal activations of a 10-minute 44.1 kHz file are tens of GB. :func:`encode_chunked` encodes
windows of ``window_frames`` frames, each with ``context_frames`` frames of real audio on both sides
that are encoded and dropped, and stitches the windows' codes. Windows start on frame boundaries, so
every strided layer sees the samples in the same phase as the whole signal; with a context at least the
receptive field, each kept frame reads exactly the samples the whole-signal computation reads, and only
the convolutions' rounding for a narrower tensor can differ (a code changes only at a near-tie). Memory
is one window's activations, whatever the signal's length.

:func:`decode_chunked` does the same for the decoder (context in frames, :attr:`decoder_receptive_field`).

:func:`encode_like_dac_compress` reproduces descript's own chunking in ``DAC.compress`` (every
convolution's padding off, the signal zero-padded by the model's delay, windows of ``win_duration``
seconds), to measure how far its codes are from whole-signal codes. ``docs/dac.md`` gives the counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from .model import DacModel

DEFAULT_WINDOW_SECONDS = 10.0


def default_context_frames(model: DacModel) -> int:
    """Frames of context per side that cover the encoder's receptive field, plus one."""
    rf = model.receptive_field
    return math.ceil(max(rf.left, rf.right) / model.hop_length) + 1


def _window_frames(model: DacModel, window_frames: int | None) -> int:
    if window_frames is None:
        return max(1, round(DEFAULT_WINDOW_SECONDS * model.frame_rate))
    return _count(window_frames, "window_frames", 1)


def _count(value: object, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")
    return value


@torch.inference_mode()
def encode_chunked(
    model: DacModel,
    x: torch.Tensor,
    n_q: int | None = None,
    window_frames: int | None = None,
    context_frames: int | None = None,
) -> torch.Tensor:
    """Codes ``[B, n_q, ceil(T / hop_length)]`` of audio ``[B, 1, T]``, encoded ``window_frames`` frames
    (default 10 s) at a time with ``context_frames`` frames of audio on each side (default: the
    receptive field, :func:`default_context_frames`). Peak memory is one window's activations.
    """
    model.check_audio(x)
    n_q = model.num_codebooks if n_q is None else n_q
    model.quantizer.check_n_q(n_q)
    hop, length = model.hop_length, x.shape[-1]
    total = model.frames_for_length(length)
    win = _window_frames(model, window_frames)
    ctx = (
        default_context_frames(model)
        if context_frames is None
        else _count(context_frames, "context_frames", 0)
    )
    out = torch.empty(x.shape[0], n_q, total, dtype=torch.long, device=x.device)
    for f0 in range(0, total, win):
        f1 = min(total, f0 + win)
        a, b = max(0, f0 - ctx), min(total, f1 + ctx)
        chunk = x[..., a * hop : min(length, b * hop)]  # the last one is padded to whole frames by encode
        out[..., f0:f1] = model.encode(chunk, n_q)[..., f0 - a : f1 - a]
    return out


@torch.inference_mode()
def decode_chunked(
    model: DacModel,
    codes: torch.Tensor,
    length: int | None = None,
    window_frames: int | None = None,
    context_frames: int | None = None,
) -> torch.Tensor:
    """Audio of codes ``[B, n_q, F]``, as :meth:`DacModel.decode` (same length rules), decoded
    ``window_frames`` frames at a time with ``context_frames`` frames on each side (default: the
    decoder's receptive field plus one)."""
    model.quantizer.check_codes(codes)
    if length is not None and length < 0:
        raise ValueError(f"length must be at least 0, got {length}")
    hop, total = model.hop_length, codes.shape[-1]
    win = _window_frames(model, window_frames)
    if context_frames is None:
        rf = model.decoder_receptive_field
        context_frames = max(rf.left, rf.right) + 1
    # one frame at least: a window's last samples are read from the next frame too
    ctx = max(1, _count(context_frames, "context_frames", 0))
    n_out = model.decoded_length(total)
    out = torch.zeros(codes.shape[0], 1, n_out if length is None else length, device=codes.device)
    for f0 in range(0, total, win):
        f1 = min(total, f0 + win)
        a, b = max(0, f0 - ctx), min(total, f1 + ctx)
        y = model.decode(codes[..., a:b])
        start, end = f0 * hop, n_out if f1 == total else f1 * hop
        end = min(end, out.shape[-1])
        if end > start:
            out[..., start:end] = y[..., start - a * hop : end - a * hop]
    return out


# -- descript's DAC.compress chunking, for comparison -------------------------------------------------------
def _convs(model: nn.Module) -> list[nn.Conv1d | nn.ConvTranspose1d]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]


def dac_output_length(model: DacModel, input_length: int) -> int:
    """descript's ``CodecMixin.get_output_length``: samples out of the unpadded encoder + decoder."""
    n = float(input_length)
    for layer in _convs(model):
        (k,), (s,), (d,) = layer.kernel_size, layer.stride, layer.dilation
        n = (n - d * (k - 1) - 1) / s + 1 if isinstance(layer, nn.Conv1d) else (n - 1) * s + d * (k - 1) + 1
        n = math.floor(n)
    return int(n)


def dac_delay(model: DacModel) -> int:
    """descript's ``CodecMixin.get_delay``: the zero padding ``compress`` puts on each side, in samples."""
    out = dac_output_length(model, 0)
    n = float(out)
    for layer in reversed(_convs(model)):
        (k,), (s,), (d,) = layer.kernel_size, layer.stride, layer.dilation
        n = (
            (n - d * (k - 1) - 1) / s + 1
            if isinstance(layer, nn.ConvTranspose1d)
            else (n - 1) * s + d * (k - 1) + 1
        )
        n = math.ceil(n)
    return int((n - out) // 2)


@contextmanager
def _unpadded(model: DacModel) -> Iterator[None]:
    """Every convolution's padding set to 0 (descript's ``model.padding = False``), restored after.
    Not for a model that other threads use meanwhile."""
    convs = _convs(model)
    saved = [c.padding for c in convs]
    try:
        for c in convs:
            c.padding = (0,)
        yield
    finally:
        for c, p in zip(convs, saved, strict=True):
            c.padding = p


@torch.inference_mode()
def encode_like_dac_compress(
    model: DacModel, x: torch.Tensor, n_q: int | None = None, win_duration: float = 1.0
) -> torch.Tensor:
    """Codes of audio ``[B, 1, T]`` as descript's ``DAC.compress`` computes them, without its resampling
    and loudness normalization (-16 LUFS): the signal is taken as given.

    Up to ``win_duration`` seconds, one padded pass (:meth:`DacModel.encode`). Longer: padding off in
    every convolution, the signal zero-padded by :func:`dac_delay` samples on both sides, and windows of
    ``ceil(win_duration * sr / hop) * hop`` samples every :func:`dac_output_length` samples, each
    encoded alone; their codes are concatenated (so there can be more frames than
    ``ceil(T / hop_length)``).
    """
    model.check_audio(x)
    n_q = model.num_codebooks if n_q is None else n_q
    length = x.shape[-1]
    sr, hop = model.sampling_rate, model.hop_length
    if length / sr <= win_duration:
        return model.encode(x, n_q)
    delay = dac_delay(model)
    padded = F.pad(x, (delay, delay))
    n_samples = math.ceil(int(win_duration * sr) / hop) * hop
    step = dac_output_length(model, n_samples)
    if step <= 0:  # descript's loop would then produce no window at all
        raise ValueError(
            f"win_duration {win_duration} s is shorter than the model's receptive field "
            f"(2 x {dac_delay(model)} samples); descript's compress fails the same way"
        )
    codes = []
    with _unpadded(model):
        for i in range(0, length, step):
            w = padded[..., i : i + n_samples]
            w = F.pad(w, (0, n_samples - w.shape[-1]))
            codes.append(model.quantizer.encode(model.encoder(w), n_q, model.distance))
    return torch.cat(codes, dim=-1)
