"""The REST endpoints' model work, in bounded pieces: audio is read, converted and resampled block by
block and encoded through the streaming engine (:func:`rvqkit.chunked.encode_file`, whose codes equal
``Codec.encode`` of the whole signal), codes are decoded packet by packet
(:func:`rvqkit.chunked.decode_to_file`). After each piece the job gives the model back
(:meth:`~rvqkit.server.gate.Turn.piece_done`), so live streams never wait for more than one piece, and a
job whose client left stops there. Each function runs in a job thread; the upload goes to a private
temporary folder because the chunked readers work on files (no name the client sent is used).

Costs are checked before any of this, from headers (:func:`probe_audio`, the ``.ecdc`` header, the codes'
declared length), and again as pieces arrive where a header can understate them (compressed formats).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import soundfile as sf

from ..audio import MIN_SAMPLE_RATE, resampled_length
from ..chunked import decode_to_file, encode_file
from ..codec import Codec
from ..encoded import Encoded
from ..errors import AudioError, RvqkitError
from .gate import Turn
from .limits import LimitError, ServerSettings
from .schemas import MAX_SAMPLE_RATE


def _renamed(e: RvqkitError, path: Path, what: str) -> RvqkitError:
    """The same error with the private temporary path replaced by what the client sent."""
    return type(e)(str(e).replace(str(path), what))


def probe_audio(data: bytes, codec: Codec, settings: ServerSettings) -> int:
    """The samples uploaded audio gives at the model's rate, from its header; refuses rates outside
    4000..384000 Hz, empty audio and audio over the cost limits before anything is decoded."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError by format
        why = str(e).split(": ", 1)[-1].strip().rstrip(".") if str(e) else type(e).__name__
        raise AudioError(f"cannot read the uploaded audio ({why}); send WAV, FLAC, OGG or MP3") from e
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE or channels <= 0:
        raise AudioError(
            f"uploaded audio at {sr} Hz with {channels} channels; the server takes {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE} Hz"
        )
    if frames <= 0:
        raise AudioError("the uploaded audio is empty (0 samples)")
    settings.check_duration(frames, sr)
    samples = resampled_length(frames, sr, codec.sample_rate)
    settings.check_cost(samples, codec.sample_rate)
    return samples


def _cost_guard(turn: Turn, codec: Codec, settings: ServerSettings):
    """A progress callback: checks the work done so far against the cost cap, then ends the piece."""
    cap = settings.job_samples(codec.sample_rate)

    def done(seconds: float) -> None:
        if seconds * codec.sample_rate > cap + codec.sample_rate:  # a header understated the length
            raise LimitError(f"the audio is longer than its header said; the limit is {cap} samples")
        turn.piece_done()

    return done


def encode_job(turn: Turn, codec: Codec, data: bytes, bandwidth: float, settings: ServerSettings) -> Encoded:
    """Encode uploaded audio bytes piece by piece; equals ``codec.encode`` of the decoded file."""
    with tempfile.TemporaryDirectory(prefix="rvqkit-") as d:
        path = Path(d) / "upload"
        path.write_bytes(data)
        try:
            return encode_file(
                codec,
                path,
                bandwidth,
                progress=_cost_guard(turn, codec, settings),
                block_seconds=settings.job_piece_s,
            )
        except RvqkitError as e:
            raise _renamed(e, path, "uploaded audio") from e


def decode_job(turn: Turn, codec: Codec, enc: Encoded, n_q: int | None, settings: ServerSettings) -> bytes:
    """Decode item 0 of ``enc`` piece by piece to 16-bit WAV bytes (clipped to [-1, 1])."""
    with tempfile.TemporaryDirectory(prefix="rvqkit-") as d:
        path = Path(d) / "out.wav"
        block = max(1, int(settings.job_piece_s * codec.frame_rate))
        decode_to_file(codec, enc, path, n_q, progress=lambda _: turn.piece_done(), block_frames=block)
        return path.read_bytes()


def compress_job(turn: Turn, codec: Codec, data: bytes, bandwidth: float, settings: ServerSettings) -> bytes:
    """Encode uploaded audio piece by piece and write it as ``.ecdc`` bytes (no entropy coding)."""
    from ..compress import ecdc_bytes

    return ecdc_bytes(encode_job(turn, codec, data, bandwidth, settings))


def decompress_job(turn: Turn, codec: Codec, data: bytes, settings: ServerSettings) -> bytes:
    """Read an ``.ecdc`` file (its header already checked) and decode it piece by piece to WAV bytes. An
    entropy-coded file's LM decoding is one piece."""
    from ..compress import read_codes

    enc = read_codes(data, codec)
    turn.piece_done()
    return decode_job(turn, codec, enc, None, settings)
