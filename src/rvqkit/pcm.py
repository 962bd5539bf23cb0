"""Raw PCM: the sample formats, (de)interleaving, whole-frame splitting of a byte stream and the
streaming resampler, shared by ``rvqkit stream`` (:mod:`rvqkit.cli.stream`) and the server's streaming
sockets (:mod:`rvqkit.server.sessions`).

Layouts: PCM bytes are interleaved (sample frame after sample frame, each holding one sample per
channel); float audio here is ``float32 [channels, samples]``, full scale at ±1. This module sits below
the server and the CLI and imports neither.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import soxr

#: The PCM sample formats: little-endian 32-bit float, little-endian signed 16-bit.
PcmFormatName = Literal["f32le", "s16le"]
PCM_DTYPES: dict[str, np.dtype[Any]] = {"f32le": np.dtype("<f4"), "s16le": np.dtype("<i2")}


def pcm_dtype(fmt: str) -> np.dtype[Any]:
    """The numpy dtype of one sample of ``fmt`` (``"f32le"`` or ``"s16le"``)."""
    return PCM_DTYPES[fmt]


def frame_bytes(fmt: str, channels: int) -> int:
    """Bytes of one interleaved sample frame: one sample of ``fmt`` per channel."""
    return PCM_DTYPES[fmt].itemsize * channels


def pcm_to_float(raw: bytes, fmt: str, channels: int) -> np.ndarray:
    """Interleaved PCM ``raw`` (whole frames of ``channels`` samples) as ``float32 [channels, samples]``;
    16-bit samples are scaled by 1/32768. NaN and Inf pass through (the caller decides)."""
    dtype = PCM_DTYPES[fmt]
    x = np.frombuffer(raw, dtype=dtype).reshape(-1, channels).T
    if dtype.kind == "i":
        return x.astype(np.float32) / 32768.0
    return x.astype(np.float32)


def float_to_pcm(audio: np.ndarray, fmt: str, clip: bool = False) -> bytes:
    """``audio`` ``[channels, samples]`` as interleaved PCM bytes of ``fmt``.

    16-bit: ``round(x * 32767)`` saturated to the int16 range. ``clip``: first clip every sample to
    ±1 (both formats), as ``rvqkit stream`` writes; the server's decode socket does not."""
    a = np.clip(audio, -1.0, 1.0) if clip else audio
    a = a.T  # [samples, channels] interleaved
    dtype = PCM_DTYPES[fmt]
    if dtype.kind == "i":
        a = np.clip(np.round(a * 32767.0), -32768, 32767)
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


class FrameSplitter:
    """Cuts a PCM byte stream that arrives in pieces of any size into whole sample frames, keeping the
    rest (0 to ``width - 1`` bytes) for the next piece."""

    def __init__(self, width: int) -> None:
        self.width = width  # bytes per sample frame
        self.carry = b""  # bytes of an incomplete frame, waiting for the rest

    def split(self, data: bytes) -> bytes:
        """The whole frames of what was carried plus ``data``; the rest is carried."""
        data = self.carry + data
        cut = len(data) - len(data) % self.width
        self.carry = data[cut:]
        return data[:cut]


class StreamResampler:
    """Resamples a stream chunk by chunk, from ``in_rate`` to ``out_rate`` Hz (soxr, float32): the
    chunks' outputs, concatenated, are the whole signal's resampling. Equal rates pass audio through.

    Audio in and out is ``float32 [channels, samples]``; a chunk's output may be shorter or longer than
    its input times the rate ratio (the filter's delay), and the last chunk (``last=True``, possibly
    empty) flushes the rest."""

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        self.in_rate, self.out_rate, self.channels = in_rate, out_rate, channels
        self._soxr: Any = (
            soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32") if in_rate != out_rate else None
        )

    @property
    def active(self) -> bool:
        """Whether the rates differ (else :meth:`process` returns its input)."""
        return self._soxr is not None

    def process(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        """The resampled ``x`` ``[channels, samples]`` (samples at ``in_rate``), as far as known now."""
        if self._soxr is None:
            return x
        y = self._soxr.resample_chunk(np.ascontiguousarray(x.T), last=last)
        return np.ascontiguousarray(np.asarray(y, dtype=np.float32).T)
