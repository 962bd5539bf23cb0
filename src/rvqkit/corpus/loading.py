"""Decode one item's audio file and bring it to the model's rate and channels (runs in worker processes).

Every way an item can be unusable ends in a :class:`~rvqkit.corpus.items.Loaded` with a ``reason``
(see :data:`~rvqkit.corpus.items.REASONS`), never an exception, so one bad file cannot stop a job.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from .. import audio as audio_io
from .files import check_listed
from .items import Loaded


@dataclass(frozen=True)
class LoadSpec:
    """Where audio goes: model rate (Hz) and channels, and the accepted duration range (seconds)."""

    sample_rate: int
    channels: int
    min_duration: float = 0.0
    max_duration: float | None = None


def _open(payload: str | bytes):
    return io.BytesIO(payload) if isinstance(payload, (bytes, bytearray)) else str(payload)


def decode_audio(payload: str | bytes) -> tuple[np.ndarray, int]:
    """Decode a file path or encoded file bytes to float32 ``[channels, samples]`` and its rate in Hz."""
    data, sr = sf.read(_open(payload), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(sr)


def load_item(
    index: int, payload: str | bytes, spec: LoadSpec, listed: tuple[int, int] | None = None
) -> Loaded:
    """Read, check and convert one item. Reasons: unreadable, empty, nan, too_short, too_long; for a
    path, also special_file (never opened), vanished and changed (``listed``: the file's size and
    modification time in ns when the job listed it)."""
    if isinstance(payload, (bytes, bytearray)) and not payload:
        return Loaded(index, reason="unreadable", message="no audio data")
    if not isinstance(payload, (bytes, bytearray)):
        problem = check_listed(str(payload), listed)
        if problem is not None:
            return Loaded(index, reason=problem[0], message=problem[1])
    try:
        info = sf.info(_open(payload))
    except Exception as e:  # LibsndfileError, RuntimeError, FileNotFoundError ... depending on the file
        return Loaded(index, reason="unreadable", message=f"cannot read audio ({e})")
    sr, ch = int(info.samplerate), int(info.channels)
    if info.frames > 0 and spec.max_duration is not None and info.frames / sr > spec.max_duration:
        return Loaded(
            index,
            sample_rate=sr,
            channels=ch,
            num_samples=int(info.frames),
            reason="too_long",
            message=f"{info.frames / sr:.2f} s is over max_duration {spec.max_duration:g} s",
        )
    try:
        x, sr = decode_audio(payload)
    except Exception as e:
        return Loaded(index, reason="unreadable", message=f"cannot decode audio ({e})")
    out = Loaded(index, sample_rate=sr, channels=x.shape[0], num_samples=x.shape[-1])
    if x.shape[-1] == 0:
        out.reason, out.message = "empty", "0 samples"
    elif not np.isfinite(x).all():
        out.reason, out.message = "nan", "contains NaN or Inf samples"
    elif out.duration < spec.min_duration:
        out.reason = "too_short"
        out.message = f"{out.duration:.3f} s is under min_duration {spec.min_duration:g} s"
    elif spec.max_duration is not None and out.duration > spec.max_duration:
        out.reason = "too_long"
        out.message = f"{out.duration:.2f} s is over max_duration {spec.max_duration:g} s"
    else:
        try:  # the same conversion as Codec.prepare, so the codes equal codec.encode(original, sr)
            y = audio_io.convert_channels(x, spec.channels)
            out.audio = audio_io.resample(y, sr, spec.sample_rate)
        except Exception as e:  # AudioError for odd rates, MemoryError for huge files ...
            out.reason, out.message = "unreadable", f"cannot convert audio ({type(e).__name__}: {e})"
    return out
