"""The FastAPI app: REST endpoints (encode, decode, compress, decompress, info, health, quality), the
streaming sockets and the browser page at ``/``, assembled from their routers.

The model is shared by everything, one user at a time (on CPU concurrent calls would only compete for
the same cores; see :mod:`rvqkit.server.gate`): live stream steps go first, and REST requests are
admitted up to ``max_jobs`` (then 503) and run in pieces (:mod:`rvqkit.server.jobs`), with parsing off
the event loop and every cost checked from headers first. Uploads are read into memory up to the size
limit; no name or path the client sends is ever used to open a file.

Where things are: the REST routes in :mod:`rvqkit.server.routes` and :mod:`rvqkit.server.quality`, the
sockets in :mod:`rvqkit.server.sockets` (sessions: :mod:`rvqkit.server.sessions`; the engine's scheduler:
:mod:`rvqkit.server.hub`), errors and the body limit in :mod:`rvqkit.server.handlers`. The routes take the
codec, settings, hub and job queue from ``app.state`` (FastAPI dependencies: :mod:`rvqkit.server.deps`).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ..codec import Codec
from .gate import JobQueue, ModelGate
from .handlers import BodyLimit, add_error_handlers
from .hub import StreamHub
from .inputs import json_model
from .limits import ServerSettings
from .quality import router as quality_router
from .routes import STATIC, codec_routes, service
from .security import HostOriginGuard
from .sockets import router as stream_router


def create_app(codec: Codec, settings: ServerSettings | None = None) -> FastAPI:
    """The server for ``codec``; ``settings`` bound uploads and streams (defaults: :class:`ServerSettings`)."""
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
    app.state.json_body = (json_model(codec, settings), settings.json_bytes(codec.frame_rate))
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + 64 * 1024)
    # added last, so it runs first: a request from an untrusted host or origin is refused before anything
    app.add_middleware(
        HostOriginGuard, trusted_hosts=settings.trusted_hosts, allowed_origins=settings.allowed_origins
    )
    add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in (service, codec_routes, stream_router, quality_router):
        app.include_router(router)
    return app
