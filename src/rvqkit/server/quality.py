"""``POST /v1/quality``: what each codebook count costs in quality on an uploaded clip, for the page.

The upload is read as ``/v1/encode`` reads it (same limits, checked from its header first), resampled
to the model's rate, and its first :data:`QUALITY_MAX_S` seconds at most are encoded at the requested
bandwidth; the clip is then decoded from the first k codebooks for every k, to the same 16-bit WAV
``/v1/decode/json?n_q=k`` returns, and each reconstruction is scored against the clip with the metrics
of ``rvqkit eval`` that are cheap enough to run per k (:data:`QUALITY_METRICS`: SI-SDR, log-mel and
multi-resolution STFT distances), block by block (:mod:`rvqkit.eval.streaming`).

The work is one admitted REST job (:class:`~rvqkit.server.gate.JobQueue`: 503 when full, dropped when
the client leaves): the encode and each decode run in pieces under the model gate, and reading,
resampling and scoring run outside it, so live streams are not held up by the metrics. The model work
is ``1 + n_q`` passes over the clip, so the clip is also cut to what the per-request cost cap allows.
"""

import contextlib
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..chunked import decode_to_file, encode_file, read_blocks
from ..codec import Codec
from ..errors import RvqkitError
from ..eval.metrics import HIGHER_IS_BETTER, UNITS, MetricSkipped
from ..eval.streaming import STREAMING_METRICS, BlockScores
from .deps import Bandwidth, CodecDep, JobsDep, SettingsDep, Upload, read_upload
from .gate import JobCancelled, Turn
from .handlers import ERRORS
from .jobs import _renamed, probe_audio
from .limits import LimitError, ServerSettings

#: Longest part of an upload that is scored, seconds (its start).
QUALITY_MAX_S = 30.0
#: The metrics of each row, in order.
QUALITY_METRICS = STREAMING_METRICS


class QualityRow(BaseModel):
    """The reconstruction from the first ``k`` codebooks against the clip."""

    k: int = Field(description="codebooks decoded")
    kbps: float = Field(description="nominal bitrate of k codebooks, kbps")
    si_sdr: float | None = Field(description="scale-invariant SDR, dB (higher is better)")
    mel_distance: float | None = Field(description="mean |log-mel difference|, dB (lower is better)")
    stft_distance: float | None = Field(description="multi-resolution STFT distance (lower is better)")
    skipped: str = Field(description="'metric: reason; ...' for each metric without a value")


class QualityResponse(BaseModel):
    model: str
    sample_rate: int = Field(description="Hz; the clip is scored at the model's rate and channels")
    channels: int
    bandwidth: float = Field(description="kbps the clip was encoded at")
    n_q: int = Field(description="codebooks at that bandwidth: rows k = 1..n_q")
    seconds: float = Field(description="length of the upload at the model's rate, s")
    scored_seconds: float = Field(description="length of the scored clip (the upload's start), s")
    metrics: list[str]
    units: dict[str, str]
    higher_is_better: dict[str, bool]
    rows: list[QualityRow]


def scored_samples(samples: int, n_q: int, sample_rate: int, settings: ServerSettings) -> int:
    """Samples of the clip to score: the upload's ``samples`` (at the model's ``sample_rate``), at most
    :data:`QUALITY_MAX_S`, and at most the cost cap over the ``1 + n_q`` passes of model work."""
    n = min(samples, int(QUALITY_MAX_S * sample_rate), settings.job_samples(sample_rate) // (1 + n_q))
    if n < 1:
        raise LimitError(
            f"scoring {n_q} codebook counts needs {1 + n_q} passes of model work; the per-request limit "
            f"({settings.job_samples(sample_rate)} samples) leaves none"
        )
    return n


@contextlib.contextmanager
def outside_gate(turn: Turn) -> Iterator[None]:
    """Give the model back for work that needs none (reading, resampling, scoring), then wait for it
    again. An error inside leaves it given back (the turn releases only what it holds)."""
    turn.held = False
    turn.gate.release()
    yield
    if turn.cancel.is_set():
        raise JobCancelled
    turn.gate.acquire(False, turn.cancel)
    turn.held = True


def _clip(path: Path, codec: Codec, samples: int, block_seconds: float) -> np.ndarray:
    """The first ``samples`` of ``path`` at the model's rate and channels, float32 ``[channels, n]``."""
    parts, have = [], 0
    for block in read_blocks(path, codec, block_seconds):
        parts.append(block[:, : samples - have])
        have += parts[-1].shape[-1]
        if have >= samples:
            break
    return np.concatenate(parts, axis=-1)


def _row(k: int, kbps: float, results: dict[str, float | MetricSkipped]) -> QualityRow:
    values: dict[str, float | None] = {}
    reasons = []
    for name, value in results.items():
        if isinstance(value, MetricSkipped):
            values[name] = None
            reasons.append(f"{name}: {value}")
        elif not math.isfinite(value):  # JSON has no infinity
            values[name] = None
            reasons.append(f"{name}: {'identical to the clip' if value > 0 else 'silent reconstruction'}")
        else:
            values[name] = value
    return QualityRow(k=k, kbps=kbps, skipped="; ".join(reasons), **values)


def quality_job(
    turn: Turn, codec: Codec, data: bytes, bandwidth: float, samples: int, settings: ServerSettings
) -> tuple[int, list[QualityRow]]:
    """Encode the first ``samples`` (model rate) of the upload, decode every k, score each; returns the
    clip's length and the rows."""
    sr = codec.sample_rate
    block = max(1, int(settings.job_piece_s * sr))
    with tempfile.TemporaryDirectory(prefix="rvqkit-") as d:
        upload, clip = Path(d) / "upload", Path(d) / "clip.wav"
        upload.write_bytes(data)
        with outside_gate(turn):
            try:
                ref = _clip(upload, codec, samples, settings.job_piece_s)
            except RvqkitError as e:
                raise _renamed(e, upload, "uploaded audio") from e
            sf.write(clip, ref.T, sr, subtype="FLOAT")  # lossless: the codes are /v1/encode's of it
        enc = encode_file(
            codec, clip, bandwidth, progress=lambda _: turn.piece_done(), block_seconds=settings.job_piece_s
        )
        rows = []
        frames = max(1, int(settings.job_piece_s * codec.frame_rate))
        bits = math.log2(codec.codebook_size)
        for k in range(1, enc.n_q + 1):
            out = Path(d) / "decoded.wav"
            decode_to_file(
                codec, enc, out, k, overwrite=True, progress=lambda _: turn.piece_done(), block_frames=frames
            )
            with outside_gate(turn):
                scores = BlockScores(sr, QUALITY_METRICS)
                with sf.SoundFile(out) as f:
                    for i in range(0, ref.shape[-1], block):
                        scores.update(ref[:, i : i + block], f.read(block, dtype="float32", always_2d=True).T)
                rows.append(_row(k, k * bits * codec.frame_rate / 1000, scores.results()))
        return ref.shape[-1], rows


router = APIRouter()  # POST /v1/quality: the codec, settings and job queue come from app.state (deps)


@router.post("/v1/quality", tags=["codec"], response_model=QualityResponse, responses=ERRORS)
async def quality(
    request: Request,
    file: Upload,
    codec: CodecDep,
    settings: SettingsDep,
    queue: JobsDep,
    bandwidth: Bandwidth = 6.0,
) -> QualityResponse:
    """Score the reconstruction of uploaded audio from the first k codebooks, for every k at the
    bandwidth: SI-SDR, log-mel and multi-resolution STFT distances against the audio at the model's
    rate (its first 30 s at most, fewer where the per-request cost cap needs it)."""
    n_q = codec.n_q_for(bandwidth)
    data = await read_upload(file, settings)
    samples = await run_in_threadpool(probe_audio, data, codec, settings)
    want = scored_samples(samples, n_q, codec.sample_rate, settings)
    scored, rows = await queue.run(request, quality_job, codec, data, bandwidth, want, settings)
    return QualityResponse(
        model=codec.name,
        sample_rate=codec.sample_rate,
        channels=codec.channels,
        bandwidth=bandwidth,
        n_q=n_q,
        seconds=samples / codec.sample_rate,
        scored_seconds=scored / codec.sample_rate,
        metrics=list(QUALITY_METRICS),
        units={m: UNITS[m] for m in QUALITY_METRICS},
        higher_is_better={m: HIGHER_IS_BETTER[m] for m in QUALITY_METRICS},
        rows=rows,
    )
