"""Audio in and out: read and write files (soundfile), resample (soxr), convert channels and dtypes.

Conventions: arrays are ``[channels, samples]`` float32 in [-1, 1]. Channel conversion follows Meta's
``convert_audio``: to mono, channels are averaged; mono to stereo, the channel is duplicated; more
channels than the model takes, the first ones are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


def to_float(x: np.ndarray) -> np.ndarray:
    """Integer PCM to float32 in [-1, 1] (int16 / 32768, int32 / 2**31); floats pass through as float32."""
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    if x.dtype == np.int32:
        return (x.astype(np.float64) / 2**31).astype(np.float32)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise AudioError(f"unsupported audio dtype {x.dtype}; give float or int16/int32 PCM")


def check_finite(x: np.ndarray, what: str = "audio") -> None:
    if x.size == 0 or x.shape[-1] == 0:
        raise AudioError(f"{what} is empty (0 samples)")
    if not np.isfinite(x).all():
        bad = int(np.argmax(~np.isfinite(x).reshape(-1)))
        raise AudioError(f"{what} contains NaN or Inf samples (first at flat index {bad})")


def convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """``[C, T]`` to ``[channels, T]`` (see the module docstring for the rule)."""
    c = x.shape[0]
    if c == channels:
        return x
    if channels == 1:
        return x.mean(axis=0, keepdims=True)
    if c == 1:
        return np.repeat(x, channels, axis=0)
    if c > channels:
        return x[:channels]
    raise AudioError(f"cannot make {channels} channels from {c}")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``[C, T]`` from ``sr_in`` to ``sr_out`` Hz with soxr (high quality)."""
    if sr_in == sr_out:
        return x
    if sr_in <= 0:
        raise AudioError(f"sample rate must be positive, got {sr_in}")
    y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1, x.shape[0]).T)


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read WAV/FLAC/OGG/MP3 as float32 ``[channels, samples]`` and its sample rate in Hz."""
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such audio file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError by format
        raise AudioError(f"{p}: cannot read audio ({e})") from None
    x = np.ascontiguousarray(data.T)
    check_finite(x, str(p))
    return x, int(sr)


def audio_info(path: str | os.PathLike[str]) -> sf._SoundFileInfo:
    try:
        return sf.info(str(path))
    except Exception as e:
        raise AudioError(f"{path}: cannot read audio ({e})") from None


class AudioWriter:
    """Write float ``[channels, n]`` blocks to a WAV/FLAC file (by suffix) as 16-bit PCM, clipped to
    [-1, 1]. The file is written beside the target and renamed into place on a clean close, so a
    failure never leaves a half-written file; an existing file is kept unless ``overwrite``."""

    def __init__(
        self, path: str | os.PathLike[str], sample_rate: int, channels: int, overwrite: bool = False
    ) -> None:
        p = Path(path)
        fmt = WRITE_FORMATS.get(p.suffix.lower())
        if fmt is None:
            raise AudioError(f"{p}: output must end in {' or '.join(WRITE_FORMATS)}")
        if p.exists() and not overwrite:
            raise AudioError(f"{p} exists; pass --overwrite to replace it")
        self.path = p
        self._tmp = p.with_name(f".{p.name}.part")
        self._file = sf.SoundFile(str(self._tmp), "w", sample_rate, channels, subtype="PCM_16", format=fmt)

    def write(self, audio: np.ndarray) -> None:
        """Append ``[channels, n]`` samples (a NumPy array or a CPU tensor)."""
        a = np.asarray(audio)
        if a.shape[-1]:
            self._file.write(np.clip(a, -1.0, 1.0).T)

    def close(self, ok: bool = True) -> None:
        self._file.close()
        if ok:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(ok=exc_type is None)


def write_audio(
    path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int, overwrite: bool = False
) -> None:
    """Write ``[channels, samples]`` float audio as 16-bit WAV or FLAC (by suffix), clipped to [-1, 1]."""
    data = np.asarray(audio, dtype=np.float32)
    with AudioWriter(path, sample_rate, data.shape[0], overwrite) as w:
        w.write(data)
