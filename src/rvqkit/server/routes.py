"""The REST routes, on two :class:`~fastapi.APIRouter` s: :data:`service` (the page, health, stats,
info) and :data:`codec_routes` (encode, decode, decompress, compress). Each takes the codec, settings,
hub and job queue it needs as FastAPI dependencies (:mod:`rvqkit.server.deps`)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..codec import Codec
from ..encoded import Encoded
from ..errors import CodesError
from ..framing import segment_bounds
from .deps import (
    NQ,
    Bandwidth,
    CodecDep,
    HubDep,
    JobsDep,
    JsonBodyDep,
    SettingsDep,
    Upload,
    read_body,
    read_upload,
)
from .handlers import ERRORS, WAV
from .inputs import check_n_q, check_npz_codes, encoded_from_json, encoded_from_npz, parse_json
from .jobs import compress_job, decode_job, decompress_job, encode_job, probe_audio
from .schemas import EncodedJSON, HealthResponse, InfoResponse, LimitsInfo, StatsResponse

STATIC = Path(__file__).parent / "static"

service = APIRouter()
codec_routes = APIRouter()


# -- conversions -------------------------------------------------------------------------------------------
def encoded_to_json(enc: Encoded, codec: Codec) -> EncodedJSON:
    n = int(enc.frame_lengths[0])
    scales = None
    if enc.scales is not None:
        segs = len(segment_bounds(codec.config, int(enc.lengths[0])))
        scales = [float(s) for s in enc.scales[0, :segs]]
    return EncodedJSON(
        model=enc.model,
        weights_sha256=enc.weights_sha256,
        sample_rate=enc.sample_rate,
        channels=enc.channels,
        bandwidth=enc.bandwidth,
        n_q=enc.n_q,
        length=int(enc.lengths[0]),
        frames=n,
        codes=enc.codes[0, :, :n].tolist(),
        scales=scales,
    )


def encoded_to_npz(enc: Encoded) -> bytes:
    """The safe ``.npz`` codes file as bytes (written by :meth:`Encoded.save` in a private temp folder)."""
    with tempfile.TemporaryDirectory(prefix="rvqkit-") as d:
        path = Path(d) / "codes.npz"
        enc.save(path)
        return path.read_bytes()


# -- service -----------------------------------------------------------------------------------------------
@service.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@service.get("/v1/health", response_model=HealthResponse, tags=["service"])
async def health(hub: HubDep, settings: SettingsDep) -> HealthResponse:
    """Liveness and the number of open streams."""
    return HealthResponse(status="ok", streams=hub.active, max_streams=settings.max_streams)


@service.get("/v1/stats", response_model=StatsResponse, tags=["service"])
async def stats(hub: HubDep, queue: JobsDep) -> StatsResponse:
    """What the streaming scheduler has done: steps, batched calls, step times."""
    return StatsResponse(
        streams=hub.active,
        batching=hub.batching,
        jobs=queue.admitted,
        jobs_cancelled=queue.cancelled,
        **hub.stats(),
    )


@service.get("/v1/info", response_model=InfoResponse, tags=["service"])
async def info(codec: CodecDep, settings: SettingsDep, hub: HubDep) -> InfoResponse:
    """The model's facts and the server's limits."""
    from ..stream import startup_frames

    cfg = codec.config
    first = cfg.segment_length or startup_frames(codec) * codec.hop_length
    return InfoResponse(
        model=codec.name,
        weights_sha256=codec.weights_sha256,
        sample_rate=codec.sample_rate,
        channels=codec.channels,
        frame_rate=codec.frame_rate,
        hop_length=codec.hop_length,
        bandwidths=list(codec.bandwidths),
        codebooks={f"{b:g}": codec.n_q_for(b) for b in codec.bandwidths},
        num_codebooks=codec.num_codebooks,
        codebook_size=codec.codebook_size,
        segment_samples=cfg.segment_length,
        stream_first_codes_samples=first,
        batching=hub.batching,
        limits=LimitsInfo(
            max_upload_bytes=settings.max_upload_bytes,
            max_duration_s=settings.max_duration_s,
            max_json_bytes=settings.json_bytes(codec.frame_rate),
            max_job_samples=settings.job_samples(codec.sample_rate),
            max_jobs=settings.max_jobs,
            job_piece_s=settings.job_piece_s,
            max_streams=settings.max_streams,
            idle_timeout_s=settings.idle_timeout_s,
            max_message_bytes=settings.max_message_bytes,
            max_stream_s=settings.max_stream_s,
            max_backlog_s=settings.max_backlog_s,
            min_stream_rate=settings.min_stream_rate,
            stream_grace_s=settings.stream_grace_s,
        ),
    )


# -- codec and bitstream -----------------------------------------------------------------------------------
@codec_routes.post(
    "/v1/encode",
    tags=["codec"],
    responses={
        **ERRORS,
        200: {
            "description": "JSON codes (format=json) or the .npz codes file (format=npz).",
            "content": {
                "application/json": {
                    "schema": EncodedJSON.model_json_schema(ref_template="#/components/schemas/{model}")
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
    },
    response_model=None,
)
async def encode(
    request: Request,
    file: Upload,
    codec: CodecDep,
    settings: SettingsDep,
    queue: JobsDep,
    bandwidth: Bandwidth = 6.0,
    format: Annotated[Literal["json", "npz"], Query(description="json or the .npz codes file")] = "json",
) -> Response:
    """Encode uploaded audio (WAV, FLAC, OGG, MP3; any rate and channels) to codes."""
    codec.n_q_for(bandwidth)
    data = await read_upload(file, settings)
    await run_in_threadpool(probe_audio, data, codec, settings)
    enc = await queue.run(request, encode_job, codec, data, bandwidth, settings)
    if format == "npz":
        return Response(
            await run_in_threadpool(encoded_to_npz, enc),
            media_type="application/octet-stream",
            headers={"Content-Disposition": 'attachment; filename="codes.npz"'},
        )
    return JSONResponse(encoded_to_json(enc, codec).model_dump())


@codec_routes.post("/v1/decode", tags=["codec"], response_class=Response, responses={**ERRORS, **WAV})
async def decode(
    request: Request,
    file: Annotated[UploadFile, File(description="A .npz codes file.")],
    codec: CodecDep,
    settings: SettingsDep,
    queue: JobsDep,
    n_q: NQ = None,
):
    """Decode an ``.npz`` codes file (from ``/v1/encode?format=npz`` or ``rvqkit encode``) to WAV."""
    data = await read_upload(file, settings)
    enc = await run_in_threadpool(encoded_from_npz, data, codec, settings)
    await run_in_threadpool(check_npz_codes, enc, codec, settings)
    check_n_q(n_q, enc.n_q)
    return Response(await queue.run(request, decode_job, codec, enc, n_q, settings), media_type="audio/wav")


@codec_routes.post(
    "/v1/decode/json",
    tags=["codec"],
    response_class=Response,
    responses={**ERRORS, **WAV},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": EncodedJSON.model_json_schema(ref_template="#/components/schemas/{model}")
                }
            },
        }
    },
)
async def decode_json(
    request: Request,
    codec: CodecDep,
    settings: SettingsDep,
    queue: JobsDep,
    json_body: JsonBodyDep,
    n_q: NQ = None,
):
    """Decode JSON codes (as ``/v1/encode`` returns them) to WAV. The body is read up to its size
    limit and validated in a worker thread, with list lengths bounded by the server's limits."""
    body_model, json_limit = json_body
    raw = await read_body(request, json_limit)
    body = await run_in_threadpool(parse_json, raw, body_model)
    enc = await run_in_threadpool(encoded_from_json, body, codec, settings)
    check_n_q(n_q, enc.n_q)
    return Response(await queue.run(request, decode_job, codec, enc, n_q, settings), media_type="audio/wav")


@codec_routes.post(
    "/v1/compress",
    tags=["bitstream"],
    response_class=Response,
    responses={
        **ERRORS,
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    },
)
async def compress(
    request: Request,
    file: Upload,
    codec: CodecDep,
    settings: SettingsDep,
    queue: JobsDep,
    bandwidth: Bandwidth = 6.0,
):
    """Compress uploaded audio to an ``.ecdc`` file (Meta's format, without entropy coding)."""
    codec.n_q_for(bandwidth)
    data = await read_upload(file, settings)
    await run_in_threadpool(probe_audio, data, codec, settings)
    out = await queue.run(request, compress_job, codec, data, bandwidth, settings)
    return Response(
        out,
        media_type="application/octet-stream",
        headers={"Content-Disposition": 'attachment; filename="audio.ecdc"'},
    )


@codec_routes.post("/v1/decompress", tags=["bitstream"], response_class=Response, responses={**ERRORS, **WAV})
async def decompress(
    request: Request,
    file: Annotated[UploadFile, File(description="An .ecdc file.")],
    codec: CodecDep,
    settings: SettingsDep,
    queue: JobsDep,
):
    """Decompress an ``.ecdc`` file made with this server's model to WAV (LM-coded files need the LM
    checkpoint on the server)."""
    from ..bitstream import read_header

    data = await read_upload(file, settings)
    header, _ = read_header(io.BytesIO(data))
    if header.model != codec.name:
        raise CodesError(f"this .ecdc file was made by {header.model}; the server runs {codec.name}")
    settings.check_cost(header.audio_length, codec.sample_rate)
    return Response(await queue.run(request, decompress_job, codec, data, settings), media_type="audio/wav")
