"""Request and response bodies of the REST API and the messages of the streaming sockets (pydantic)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..audio import MIN_SAMPLE_RATE
from .limits import MAX_CODEBOOKS

PcmFormat = Literal["f32le", "s16le"]
MAX_SAMPLE_RATE = 384_000  # Hz, the highest PCM input rate a stream may declare


def code_rows(max_frames: int | None = None, max_rows: int = MAX_CODEBOOKS) -> Any:  # a type form
    """The type of ``codes``: at most ``max_rows`` rows of at most ``max_frames`` integers.

    ``fail_fast`` stops at the first bad element: a flat list of a million numbers where rows are expected
    costs one error, not a million (pydantic would otherwise build one error object per element)."""
    row = Annotated[list[StrictInt], Field(max_length=max_frames, fail_fast=True)]
    return Annotated[list[row], Field(max_length=max_rows, fail_fast=True)]


FloatList = Annotated[list[float], Field(fail_fast=True)]
IntList = Annotated[list[StrictInt], Field(fail_fast=True)]


class ErrorResponse(BaseModel):
    """Every error the server returns: a short kind (``bad_audio``, ``too_large`` ...) and a message."""

    error: str = Field(description="Error kind, e.g. bad_audio, bad_codes, bad_request, too_large.")
    message: str = Field(description="What was wrong, for people.")


class LimitsInfo(BaseModel):
    """The server's limits (see :class:`rvqkit.server.ServerSettings` for each one's meaning)."""

    max_upload_bytes: int = Field(description="bytes")
    max_duration_s: float = Field(description="seconds of audio per REST request")
    max_json_bytes: int = Field(description="largest /v1/decode/json body, bytes")
    max_job_samples: int = Field(description="model work per REST request, samples at the model rate")
    max_jobs: int = Field(description="REST model jobs admitted at once; more get 503")
    job_piece_s: float = Field(description="REST jobs run in pieces of this many seconds of audio")
    max_streams: int
    idle_timeout_s: float
    max_message_bytes: int
    max_stream_s: float = Field(description="seconds of audio per stream")
    max_backlog_s: float = Field(description="seconds of audio a stream may have outstanding")
    min_stream_rate: float = Field(description="seconds of audio per second a stream must send")
    stream_grace_s: float = Field(description="seconds before min_stream_rate applies")


class InfoResponse(BaseModel):
    """Facts about the model the server runs."""

    model: str
    weights_sha256: str | None
    sample_rate: int = Field(description="Hz")
    channels: int
    frame_rate: int = Field(description="code frames per second")
    hop_length: int = Field(description="samples per code frame")
    bandwidths: list[float] = Field(description="kbps")
    codebooks: dict[str, int] = Field(description="codebooks used at each bandwidth (key: kbps)")
    num_codebooks: int
    codebook_size: int
    segment_samples: int | None = Field(description="48 kHz model: samples per segment; else null")
    stream_first_codes_samples: int = Field(description="samples a stream needs before its first codes")
    batching: bool = Field(description="whether streams share batched model calls")
    limits: LimitsInfo


class HealthResponse(BaseModel):
    status: Literal["ok"]
    streams: int = Field(description="open streaming sockets")
    max_streams: int


class StatsResponse(BaseModel):
    """The streaming scheduler's work: steps, engine calls, step time and streams per step."""

    streams: int = Field(description="open streaming sockets")
    batching: bool
    steps: int = Field(description="scheduler steps since start")
    calls: int = Field(description="engine calls since start (a batched call counts once)")
    step_seconds_total: float = Field(description="time spent in steps since start, s")
    stream_steps_total: int = Field(description="sum over steps of the streams each served")
    step_ms_median: float = Field(description="over the last 10000 steps, ms")
    step_ms_p99: float = Field(description="over the last 10000 steps, ms")
    streams_per_step_mean: float = Field(description="streams served per step, last 10000 steps")
    jobs: int = Field(default=0, description="REST model jobs running or waiting now")
    jobs_cancelled: int = Field(default=0, description="REST jobs stopped because their client went away")


class EncodedJSON(BaseModel):
    """The codes of one signal as JSON (the ``.npz`` format holds the same facts)."""

    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description="model name, e.g. encodec_24khz")
    weights_sha256: str | None = None
    sample_rate: int = Field(description="model rate, Hz")
    channels: int
    bandwidth: float = Field(description="kbps")
    n_q: int = Field(description="codebooks")
    length: int = Field(description="signal length, samples at the model rate")
    frames: int = Field(description="code frames")
    codes: code_rows() = Field(description="[n_q][frames] code indices")  # type: ignore[valid-type]  # a type built at import
    scales: FloatList | None = Field(default=None, description="48 kHz model: one scale per segment (> 0)")


# -- streaming messages (JSON text frames; audio travels as binary frames) --------------------------------
class EncodeStart(BaseModel):
    """First message on ``/v1/stream/encode``: what the binary PCM messages that follow hold."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: int = Field(
        ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE, description="Hz of the PCM the client sends (4000 to 384000)"
    )
    channels: int = Field(ge=1, le=16, description="interleaved channels")
    format: PcmFormat = "f32le"
    bandwidth: float = Field(default=6.0, description="kbps")


class DecodeStart(BaseModel):
    """First message on ``/v1/stream/decode``: the PCM format wanted back and the length if known."""

    model_config = ConfigDict(extra="forbid")

    format: PcmFormat = "f32le"
    length: int | None = Field(default=None, ge=1, description="signal length in samples, if known")


class CodesMessage(BaseModel):
    """Codes sent by the encode socket, and accepted as-is by the decode socket."""

    type: Literal["codes"] = "codes"
    start: int = Field(default=0, ge=0, description="index of the first frame here")
    codes: code_rows() = Field(description="[n_q][frames]")  # type: ignore[valid-type]  # a type built at import (code_rows)
    scales: FloatList | None = Field(default=None, description="48 kHz: one per segment completed here (> 0)")
    segment_frames: IntList = Field(default_factory=list, description="48 kHz: frames of each segment")


class ControlMessage(BaseModel):
    type: Literal["end"]
