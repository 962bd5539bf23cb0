"""Audio in and out: read and write files (soundfile), resample (soxr), convert channels and dtypes.

Conventions: arrays are ``[channels, samples]`` float32 in [-1, 1]. Channel conversion follows Meta's
``convert_audio`` and is the same on every path (``Codec.encode``, the CLI, the server): to mono,
channels are averaged (any number of them); mono to stereo, the channel is duplicated; more channels
than the model takes, the first ones are kept. The only refusal is an array whose layout is really
ambiguous: more rows than columns (and more than 2 rows) is most likely ``[samples, channels]``
(:func:`check_layout`); audio files have no such ambiguity.

Every input rate is at least :data:`MIN_SAMPLE_RATE` Hz: a tiny rate makes a few input bytes resample to
an unbounded amount of audio (1 Hz to 24 kHz is 24000x).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError, InputError, OutputError, os_error

WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
MIN_SAMPLE_RATE = 4000  # Hz; the lowest input rate any path takes (telephone audio is 8000 Hz)


def check_sample_rate(sample_rate: object, name: str = "sample_rate") -> int:
    """``sample_rate`` as an int in Hz, or :class:`AudioError` naming ``name`` if it is not an integer
    (bools refused) of at least :data:`MIN_SAMPLE_RATE`."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise AudioError(f"{name} must be an integer number of Hz, got {sample_rate!r}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise AudioError(f"{name} must be at least {MIN_SAMPLE_RATE} Hz, got {int(sample_rate)}")
    return int(sample_rate)


def resampled_length(samples: int, sr_in: int, sr_out: int) -> int:
    """Samples that ``samples`` at ``sr_in`` Hz become at ``sr_out`` Hz, as :func:`resample` and soxr's
    streaming resampler give them: ``n * sr_out / sr_in`` rounded half up (exact integer arithmetic)."""
    return (2 * samples * sr_out + sr_in) // (2 * sr_in)


def check_resampled(samples: int, sr_in: int, sr_out: int, what: str = "audio") -> int:
    """:func:`resampled_length`, or :class:`AudioError` if it is 0 (too short for the model's rate)."""
    n = resampled_length(samples, sr_in, sr_out)
    if n == 0:
        raise AudioError(
            f"{what} is too short: {samples} samples at {sr_in} Hz resample to 0 samples at {sr_out} Hz"
        )
    return n


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


def check_layout(x: np.ndarray, what: str = "audio") -> None:
    """Refuse a ``[C, T]`` array that is most likely ``[samples, channels]``: more channels than samples
    (and more than 2). Only arrays need this; a file's layout is known."""
    if x.ndim == 2 and x.shape[0] > max(2, x.shape[1]):
        raise AudioError(
            f"{what} has {x.shape[0]} channels of {x.shape[1]} samples; arrays are [channels, samples] "
            "(transpose a [samples, channels] array)"
        )


def convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """``[C, T]`` to ``[channels, T]`` (see the module docstring for the rule)."""
    c = x.shape[0]
    if c == channels:
        return x
    if channels == 1:
        return x.mean(axis=0, keepdims=True, dtype=np.float32)
    if c == 1:
        return np.repeat(x, channels, axis=0)
    if c > channels:
        return x[:channels]
    raise AudioError(f"cannot make {channels} channels from {c}")


def resample(x: np.ndarray, sr_in: int, sr_out: int, what: str = "audio") -> np.ndarray:
    """Resample ``[C, T]`` from ``sr_in`` to ``sr_out`` Hz with soxr (high quality). ``sr_in`` must be
    at least :data:`MIN_SAMPLE_RATE`, and the result at least one sample (else :class:`AudioError`)."""
    check_sample_rate(sr_in)
    if sr_in == sr_out:
        return x
    check_resampled(x.shape[-1], sr_in, sr_out, what)
    y = soxr.resample(np.ascontiguousarray(x.T), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1, x.shape[0]).T)


def check_input_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if it is a readable file; else :class:`AudioError` (missing) or
    :class:`InputError` (a folder, a symlink loop, no permission)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError as e:
        raise AudioError(f"{p}: no such audio file") from e
    except OSError as e:
        raise os_error(e, p, output=False) from e
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p} is a folder, not an audio file")
    if not os.access(p, os.R_OK):
        raise InputError(f"cannot read {p}: permission denied")
    return p


def open_audio(path: str | os.PathLike[str]) -> sf.SoundFile:
    """Open an audio file for reading block by block (the caller closes it); its sample rate is checked
    (at least :data:`MIN_SAMPLE_RATE`) before anything is read."""
    p = check_input_file(path)
    try:
        f = sf.SoundFile(str(p))
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError by format
        raise AudioError(f"{p}: cannot read audio ({e})") from e
    try:
        check_sample_rate(f.samplerate, f"{p}: sample_rate")
    except AudioError:
        f.close()
        raise
    return f


def read_audio(path: str | os.PathLike[str], max_frames: int | None = None) -> tuple[np.ndarray, int]:
    """Read WAV/FLAC/OGG/MP3 as float32 ``[channels, samples]`` and its sample rate in Hz (at least
    :data:`MIN_SAMPLE_RATE`); ``max_frames``: read at most that many samples from the start."""
    with open_audio(path) as f:
        try:
            data = f.read(-1 if max_frames is None else max_frames, dtype="float32", always_2d=True)
        except Exception as e:  # a damaged file mid-way
            raise AudioError(f"{path}: cannot read audio ({e})") from e
        sr = int(f.samplerate)
    x = np.ascontiguousarray(data.T)
    check_finite(x, str(path))
    return x, sr


def audio_info(path: str | os.PathLike[str]) -> sf._SoundFileInfo:
    """The header of an audio file (rate, channels, frames); the rate must be at least
    :data:`MIN_SAMPLE_RATE`."""
    p = check_input_file(path)
    try:
        info = sf.info(str(p))
    except Exception as e:
        raise AudioError(f"{p}: cannot read audio ({e})") from e
    check_sample_rate(info.samplerate, f"{p}: sample_rate")
    return info


def _write_failed(e: Exception, path: Path) -> OutputError:
    if isinstance(e, OSError):
        err = os_error(e, path, output=True)
        return err if isinstance(err, OutputError) else OutputError(str(err))
    try:  # libsndfile reports a short write without errno (pysoundfile asserts); a full disk is the usual cause
        full = shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        full = False
    reason = "no space left on the device (the disk is full)" if full else f"{type(e).__name__}: {e}"
    return OutputError(f"cannot write {path}: {reason}")


class AudioWriter:
    """Write float ``[channels, n]`` blocks to a WAV/FLAC file (by suffix) as 16-bit PCM, clipped to
    [-1, 1]. The file is written beside the target and renamed into place on a clean close, so a
    failure never leaves a half-written file (nor the temporary one); an existing file is kept unless
    ``overwrite``. Problems with the output are :class:`OutputError`."""

    def __init__(
        self, path: str | os.PathLike[str], sample_rate: int, channels: int, overwrite: bool = False
    ) -> None:
        p = Path(path)
        fmt = WRITE_FORMATS.get(p.suffix.lower())
        if fmt is None:
            raise AudioError(f"{p}: output must end in {' or '.join(WRITE_FORMATS)}")
        if p.is_dir():
            raise OutputError(f"output {p} is a folder; give a file name")
        if os.path.lexists(p) and not overwrite:
            raise OutputError(f"{p} exists; pass overwrite=True to replace it")
        self.path = p
        self._tmp = p.with_name(f".{p.name}.part")
        try:
            self._file = sf.SoundFile(
                str(self._tmp), "w", sample_rate, channels, subtype="PCM_16", format=fmt
            )
        except Exception as e:
            self._tmp.unlink(missing_ok=True)
            if not p.parent.is_dir():
                raise OutputError(f"output folder {p.parent} does not exist") from e
            if not os.access(p.parent, os.W_OK):
                raise OutputError(f"cannot write {p}: permission denied in {p.parent}") from e
            raise _write_failed(e, p) from e

    def write(self, audio: np.ndarray) -> None:
        """Append ``[channels, n]`` samples (a NumPy array or a CPU tensor)."""
        a = np.asarray(audio)
        if a.shape[-1]:
            try:
                self._file.write(np.clip(a, -1.0, 1.0).T)
            except Exception as e:
                raise _write_failed(e, self.path) from e

    def close(self, ok: bool = True) -> None:
        """Finish the file and rename it into place (``ok``), or delete it."""
        try:
            try:
                self._file.close()
            except Exception as e:
                if ok:
                    raise _write_failed(e, self.path) from e
            if ok:
                try:
                    os.replace(self._tmp, self.path)
                except OSError as e:
                    raise _write_failed(e, self.path) from e
        finally:
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
