"""What the routes take from the app (FastAPI dependencies) and from the request: the codec, the
settings, the stream hub and the REST job queue (``app.state``, set once by
:func:`rvqkit.server.app.create_app`), the query and upload parameters shared by several routes, and the
bounded body readers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, File, Query, Request, UploadFile

from ..codec import Codec
from ..errors import AudioError
from .gate import JobQueue
from .hub import StreamHub
from .limits import LimitError, ServerSettings


def app_codec(request: Request) -> Codec:
    """The codec the app serves."""
    return request.app.state.codec


def app_settings(request: Request) -> ServerSettings:
    """The app's limits and policies."""
    return request.app.state.settings


def app_hub(request: Request) -> StreamHub:
    """The app's stream hub (open streams, the scheduler's statistics)."""
    return request.app.state.hub


def app_jobs(request: Request) -> JobQueue:
    """The app's REST job queue (admission up to ``max_jobs``, then 503)."""
    return request.app.state.jobs


def app_json_body(request: Request) -> tuple[type[Any], int]:
    """The ``/v1/decode/json`` body model (list lengths bounded by the limits) and its size limit, bytes."""
    return request.app.state.json_body


CodecDep = Annotated[Codec, Depends(app_codec)]
SettingsDep = Annotated[ServerSettings, Depends(app_settings)]
HubDep = Annotated[StreamHub, Depends(app_hub)]
JobsDep = Annotated[JobQueue, Depends(app_jobs)]
JsonBodyDep = Annotated[tuple[type[Any], int], Depends(app_json_body)]

Bandwidth = Annotated[float, Query(description="Target bandwidth in kbps (one of the model's).")]
NQ = Annotated[int | None, Query(description="Decode from the first n_q codebooks only.")]
Upload = Annotated[UploadFile, File(description="The file's bytes; its name is ignored.")]


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
