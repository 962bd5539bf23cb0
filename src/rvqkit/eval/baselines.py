"""Baseline codecs at the model's bitrates: Opus and MP3, encoded and decoded back, so that the same
metrics compare them with the codec.

Engines, in order of preference:

- ``pyav``: PyAV (``pip install av``, part of ``rvqkit[eval]``), whose wheels bundle FFmpeg with libopus
  and LAME; encodes to an in-memory Ogg Opus or MP3 file and decodes it (pre-skip and encoder delay
  handled by FFmpeg's demuxers). Opus, and MP3.
- ``opus-tools``: the system ``opusenc`` / ``opusdec`` (Debian: ``apt-get install opus-tools``). Opus only.

The bitrate reported for a baseline is the real one: the encoded file's size (container included) per
second of audio, next to the bitrate asked for.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

from ..audio import resample

#: Opus bitrates always tried (kbps), besides the model's bandwidths and the encoder's lowest.
OPUS_KBPS = (6.0, 12.0, 24.0)
OPUS_LOWEST = {"pyav": 0.5, "opus-tools": 6.0}  # kbps per channel: libopus's floor; opusenc's documented one
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# MP3 bitrates (kbps) by sample rate: MPEG-1, MPEG-2 and MPEG-2.5 layer III
MP3_KBPS = {
    **dict.fromkeys((32000, 44100, 48000), (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)),
    **dict.fromkeys((16000, 22050, 24000), (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)),
    **dict.fromkeys((8000, 11025, 12000), (8, 16, 24, 32, 40, 48, 56, 64)),
}


@dataclass(frozen=True)
class Baseline:
    """One baseline setting: ``codec`` (``"opus"`` or ``"mp3"``) at ``kbps`` asked of ``engine``;
    ``lowest``: the lowest bitrate the encoder accepts."""

    codec: str
    kbps: float
    engine: str
    lowest: bool = False

    @property
    def label(self) -> str:
        return f"{self.codec} {self.kbps:g} kbps" + (" (lowest)" if self.lowest else "")


def _has_pyav(codec: str) -> bool:
    try:
        import av
    except ImportError:
        return False
    try:
        av.codec.Codec({"opus": "libopus", "mp3": "libmp3lame"}[codec], "w")
    except Exception:  # an FFmpeg build without the encoder
        return False
    return True


def engines() -> dict[str, str | None]:
    """The engine each baseline codec runs with here (``None``: missing)."""
    opus = "pyav" if _has_pyav("opus") else None
    if opus is None and shutil.which("opusenc") and shutil.which("opusdec"):
        opus = "opus-tools"
    return {"opus": opus, "mp3": "pyav" if _has_pyav("mp3") else None}


def missing_reason(codec: str) -> str:
    """How to get a baseline codec that :func:`engines` did not find."""
    if codec == "opus":
        return "no Opus encoder: pip install 'rvqkit[eval]' (PyAV), or install opus-tools (opusenc, opusdec)"
    return "no MP3 encoder: pip install 'rvqkit[eval]' (PyAV with LAME)"


def plan(bandwidths: list[float], sample_rate: int, channels: int) -> tuple[list[Baseline], dict[str, str]]:
    """The baseline settings for a model's ``bandwidths`` (kbps) and the reasons for those left out
    (``{codec: reason}``): Opus at its lowest bitrate, 6, 12, 24 kbps and the model's bandwidths from
    6 kbps per channel up; MP3 at the model's bandwidths that MP3 has at ``sample_rate``."""
    found = engines()
    out: list[Baseline] = []
    missing: dict[str, str] = {}
    if found["opus"] is None:
        missing["opus"] = missing_reason("opus")
    elif sample_rate not in OPUS_RATES:
        missing["opus"] = f"Opus does not take {sample_rate} Hz audio"
    else:
        lowest = OPUS_LOWEST[found["opus"]] * channels
        # below 6 kbps per channel libopus gives its lowest rate whatever is asked: one setting for it
        kbps = sorted({k for k in (*OPUS_KBPS, *bandwidths) if k >= 6.0 * channels})
        out.append(Baseline("opus", lowest, found["opus"], lowest=True))
        out += [Baseline("opus", k, found["opus"]) for k in kbps if k != lowest]
    rates = MP3_KBPS.get(sample_rate, ())
    mp3 = [b for b in bandwidths if b in rates]
    if found["mp3"] is None:
        missing["mp3"] = missing_reason("mp3")
    elif not mp3:
        missing["mp3"] = (
            f"MP3 has none of the model's bitrates at {sample_rate} Hz "
            f"(it has {', '.join(map(str, rates)) or 'none'} kbps)"
        )
    else:
        out += [Baseline("mp3", b, found["mp3"]) for b in mp3]
    return out, missing


def run(baseline: Baseline, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Encode ``audio`` (float32 ``[channels, samples]`` at ``sample_rate`` Hz) with the baseline and decode
    it back: the reconstruction (same shape and rate, trimmed or zero-padded to the input's length) and
    the real bitrate in kbps (encoded bytes per second)."""
    if baseline.engine == "pyav":
        data, y, rate = _pyav(baseline, audio, sample_rate)
    elif baseline.engine == "opus-tools":
        data, y, rate = _opus_tools(baseline, audio, sample_rate)
    else:
        raise ValueError(f"unknown baseline engine {baseline.engine!r}")
    y = resample(np.ascontiguousarray(y, dtype=np.float32), rate, sample_rate)
    n = audio.shape[-1]
    out = np.zeros_like(audio, dtype=np.float32)
    out[:, : min(n, y.shape[-1])] = y[: audio.shape[0], :n]
    return out, len(data) * 8 / 1000 / (n / sample_rate)


def _pyav(b: Baseline, audio: np.ndarray, sample_rate: int) -> tuple[bytes, np.ndarray, int]:
    import av

    channels = audio.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg" if b.codec == "opus" else "mp3") as out:
        stream = out.add_stream(
            "libopus" if b.codec == "opus" else "libmp3lame", rate=sample_rate, layout=layout
        )
        stream.bit_rate = int(round(b.kbps * 1000))
        if b.codec == "opus":
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio.T.reshape(1, -1), dtype=np.float32), format="flt", layout=layout
            )
        else:  # LAME takes planar float
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio, dtype=np.float32), format="fltp", layout=layout
            )
        frame.sample_rate = sample_rate
        for packet in (*stream.encode(frame), *stream.encode(None)):
            out.mux(packet)
    data = buf.getvalue()
    chunks = []
    with av.open(io.BytesIO(data), "r") as inp:
        s = inp.streams.audio[0]
        rate = s.rate
        for fr in inp.decode(s):
            a = fr.to_ndarray()
            chunks.append(a.reshape(-1, channels).T if fr.format.is_packed else a)
    y = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    return data, y.astype(np.float32), int(rate)


def _opus_tools(b: Baseline, audio: np.ndarray, sample_rate: int) -> tuple[bytes, np.ndarray, int]:
    channels = audio.shape[0]
    pcm = (np.clip(audio.T, -1, 1) * 32767).round().astype("<i2").tobytes()
    with tempfile.TemporaryDirectory(prefix="rvqkit-opus-") as tmp:
        src, enc, dec = (os.path.join(tmp, n) for n in ("in.raw", "out.opus", "out.raw"))
        with open(src, "wb") as f:
            f.write(pcm)
        subprocess.run(
            [
                "opusenc", "--quiet", "--bitrate", f"{b.kbps:g}", "--raw", "--raw-bits", "16",
                "--raw-rate", str(sample_rate), "--raw-chan", str(channels), src, enc,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        subprocess.run(
            ["opusdec", "--quiet", "--rate", str(sample_rate), "--force-wav", enc, dec + ".wav"],
            check=True,
            capture_output=True,
        )
        import soundfile as sf

        y, rate = sf.read(dec + ".wav", dtype="float32", always_2d=True)
        with open(enc, "rb") as f:
            data = f.read()
    return data, y.T, int(rate)
