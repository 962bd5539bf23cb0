"""The FastAPI app: REST endpoints (encode, decode, compress, decompress, info, health), the streaming
sockets (see :mod:`rvqkit.server.sockets`) and the browser page at ``/``.

The model is shared by everything, one user at a time (on CPU concurrent calls would only compete for
the same cores; see :mod:`rvqkit.server.gate`): live stream steps go first, and REST requests are
admitted up to ``max_jobs`` (then 503) and run in pieces (:mod:`rvqkit.server.jobs`), with parsing off
the event loop and every cost checked from headers first. Uploads are read into memory up to the size limit; no name or path
the client sends is ever used to open a file.
"""

from __future__ import annotations

import io
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..codec import Codec
from ..encoded import Encoded
from ..errors import AudioError, BandwidthError, CodesError, RvqkitError, WeightsError
from ..framing import segment_bounds
from .gate import JobCancelled, JobQueue, ModelGate
from .inputs import (
    JSONBodyError,
    check_n_q,
    check_npz_codes,
    encoded_from_json,
    encoded_from_npz,
    json_model,
    parse_json,
)
from .jobs import compress_job, decode_job, decompress_job, encode_job, probe_audio
from .limits import BusyError, LimitError, NQError, ServerSettings
from .quality import add_quality_routes
from .schemas import EncodedJSON, ErrorResponse, HealthResponse, InfoResponse, LimitsInfo, StatsResponse
from .security import HostOriginGuard

STATIC = Path(__file__).parent / "static"
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Bad input: unreadable audio or codes, bad parameter."},
    413: {"model": ErrorResponse, "description": "Upload larger or longer than the server accepts."},
    422: {"model": ErrorResponse, "description": "Request does not match the schema."},
    503: {"model": ErrorResponse, "description": "Busy: too many requests waiting; see Retry-After."},
}
WAV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}}
}
ERROR_KINDS: list[tuple[type[Exception], str]] = [
    (LimitError, "too_large"),
    (AudioError, "bad_audio"),
    (NQError, "bad_n_q"),
    (BandwidthError, "bad_bandwidth"),
    (CodesError, "bad_codes"),
    (WeightsError, "unavailable"),
    (RvqkitError, "bad_request"),
]


def error_kind(exc: Exception) -> str:
    return next(kind for cls, kind in ERROR_KINDS if isinstance(exc, cls))


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=kind, message=message).model_dump(), status_code=status)


class BodyLimit:
    """ASGI middleware: answer 413 as soon as a request body passes ``limit`` bytes (declared or sent),
    before anything parses or spools it."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = _error(413, "too_large", f"request body is larger than {self.limit} bytes")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        seen = 0
        exceeded = replaced = False

        async def limited_receive():
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise LimitError(f"request body is larger than {self.limit} bytes")
            return message

        async def guarded_send(message):
            # whatever the app answers to a body cut off at the limit (a parse error, say) becomes the 413
            nonlocal replaced
            if not exceeded:
                return await send(message)
            if not replaced:
                replaced = True
                await too_large(scope, receive, send)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except LimitError:
            if not replaced:
                await too_large(scope, receive, send)


Bandwidth = Annotated[float, Query(description="Target bandwidth in kbps (one of the model's).")]
NQ = Annotated[int | None, Query(description="Decode from the first n_q codebooks only.")]
Upload = Annotated[UploadFile, File(description="The file's bytes; its name is ignored.")]


# -- conversions -------------------------------------------------------------------------------------------
async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (declared or sent) before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise LimitError(f"request body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LimitError(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(file: UploadFile, settings: ServerSettings) -> bytes:
    """The uploaded bytes, refusing more than the upload limit."""
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise LimitError(f"upload is larger than {settings.max_upload_bytes} bytes")
    if not data:
        raise AudioError("the upload is empty (0 bytes)")
    return data


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


# -- the app -----------------------------------------------------------------------------------------------
def create_app(codec: Codec, settings: ServerSettings | None = None) -> FastAPI:
    """The server for ``codec``; ``settings`` bound uploads and streams (defaults: :class:`ServerSettings`)."""
    from .sockets import StreamHub, add_stream_routes

    settings = settings or ServerSettings()
    gate = ModelGate()
    hub = StreamHub(codec, settings, gate)
    queue = JobQueue(gate, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await hub.close()
        queue.close()

    app = FastAPI(
        title="rvqkit codec server",
        version="1",
        description=f"EnCodec ({codec.name}) as a service: REST encode/decode/compress and WebSocket streaming.",
        lifespan=lifespan,
    )
    app.state.codec, app.state.settings, app.state.hub, app.state.jobs = codec, settings, hub, queue
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + 64 * 1024)
    # added last, so it runs first: a request from an untrusted host or origin is refused before anything
    app.add_middleware(
        HostOriginGuard, trusted_hosts=settings.trusted_hosts, allowed_origins=settings.allowed_origins
    )

    @app.exception_handler(LimitError)
    async def _limit(request: Request, exc: LimitError) -> JSONResponse:
        return _error(413, "too_large", str(exc))

    @app.exception_handler(BusyError)
    async def _busy(request: Request, exc: BusyError) -> JSONResponse:
        response = _error(503, "busy", str(exc))
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(JobCancelled)
    async def _gone(request: Request, exc: JobCancelled) -> Response:
        return Response(status_code=499)  # nobody is listening; the status is for the access log

    @app.exception_handler(JSONBodyError)
    async def _json_body(request: Request, exc: JSONBodyError) -> JSONResponse:
        return _error(422, "bad_request", str(exc))

    @app.exception_handler(RvqkitError)
    async def _rvqkit(request: Request, exc: RvqkitError) -> JSONResponse:
        return _error(400, error_kind(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return _error(422, "bad_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, f"http_{exc.status_code}", str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal", f"internal server error ({type(exc).__name__})")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/v1/health", response_model=HealthResponse, tags=["service"])
    async def health() -> HealthResponse:
        """Liveness and the number of open streams."""
        return HealthResponse(status="ok", streams=hub.active, max_streams=settings.max_streams)

    @app.get("/v1/stats", response_model=StatsResponse, tags=["service"])
    async def stats() -> StatsResponse:
        """What the streaming scheduler has done: steps, batched calls, step times."""
        return StatsResponse(
            streams=hub.active,
            batching=hub.batching,
            jobs=queue.admitted,
            jobs_cancelled=queue.cancelled,
            **hub.stats(),
        )

    @app.get("/v1/info", response_model=InfoResponse, tags=["service"])
    async def info() -> InfoResponse:
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
                max_json_bytes=json_limit,
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

    @app.post(
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

    @app.post("/v1/decode", tags=["codec"], response_class=Response, responses={**ERRORS, **WAV})
    async def decode(
        request: Request, file: Annotated[UploadFile, File(description="A .npz codes file.")], n_q: NQ = None
    ):
        """Decode an ``.npz`` codes file (from ``/v1/encode?format=npz`` or ``rvqkit encode``) to WAV."""
        data = await read_upload(file, settings)
        enc = await run_in_threadpool(encoded_from_npz, data, codec, settings)
        await run_in_threadpool(check_npz_codes, enc, codec, settings)
        check_n_q(n_q, enc.n_q)
        return Response(
            await queue.run(request, decode_job, codec, enc, n_q, settings), media_type="audio/wav"
        )

    body_model = json_model(codec, settings)
    json_limit = settings.json_bytes(codec.frame_rate)

    @app.post(
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
    async def decode_json(request: Request, n_q: NQ = None):
        """Decode JSON codes (as ``/v1/encode`` returns them) to WAV. The body is read up to its size
        limit and validated in a worker thread, with list lengths bounded by the server's limits."""
        raw = await read_body(request, json_limit)
        body = await run_in_threadpool(parse_json, raw, body_model)
        enc = await run_in_threadpool(encoded_from_json, body, codec, settings)
        check_n_q(n_q, enc.n_q)
        return Response(
            await queue.run(request, decode_job, codec, enc, n_q, settings), media_type="audio/wav"
        )

    @app.post(
        "/v1/compress",
        tags=["bitstream"],
        response_class=Response,
        responses={
            **ERRORS,
            200: {
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
            },
        },
    )
    async def compress(request: Request, file: Upload, bandwidth: Bandwidth = 6.0):
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

    @app.post("/v1/decompress", tags=["bitstream"], response_class=Response, responses={**ERRORS, **WAV})
    async def decompress(request: Request, file: Annotated[UploadFile, File(description="An .ecdc file.")]):
        """Decompress an ``.ecdc`` file made with this server's model to WAV (LM-coded files need the LM
        checkpoint on the server)."""
        from ..bitstream import read_header

        data = await read_upload(file, settings)
        header, _ = read_header(io.BytesIO(data))
        if header.model != codec.name:
            raise CodesError(f"this .ecdc file was made by {header.model}; the server runs {codec.name}")
        settings.check_cost(header.audio_length, codec.sample_rate)
        return Response(
            await queue.run(request, decompress_job, codec, data, settings), media_type="audio/wav"
        )

    add_stream_routes(app, hub)
    add_quality_routes(app)
    return app
