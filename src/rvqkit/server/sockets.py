"""WebSocket streaming: ``/v1/stream/encode`` (PCM in, codes out) and ``/v1/stream/decode`` (codes in,
PCM out), as routes on an :class:`~fastapi.APIRouter`.

Each route admits the connection against the stream limit, runs its session
(:class:`~rvqkit.server.sessions.EncodeSession`, :class:`~rvqkit.server.sessions.DecodeSession`: the
protocol, the limits, the conversions) and turns every failure into an error message and a close code.
All live streams run on the app's one :class:`~rvqkit.server.hub.StreamHub` (the engine, its batching and
feeds: see :mod:`rvqkit.server.hub`), which the routes take from the app's state.

Protocol (JSON text messages; audio as binary messages; see docs/server.md):
encode: client ``{"sample_rate", "channels", "format", "bandwidth"}`` → server ``{"type": "ready", ...}``;
client binary PCM (interleaved, any size) ... → server ``{"type": "codes", "start", "codes", ...}`` as
frames become final; client ``{"type": "end"}`` → server last codes, ``{"type": "done", ...}``, close.
decode: client ``{"format", "length"}`` → ``ready``; client codes messages (as the encode socket sends
them) → server binary PCM; ``{"type": "end"}`` → last PCM, ``done``, close.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..errors import RvqkitError
from ..pcm import PCM_DTYPES as DTYPES  # noqa: F401  (re-exported, as before)
from .hub import (  # noqa: F401  (re-exported: benchmarks, tests and docs name them here)
    STEP_SAMPLES,
    THNN_MAX_ROWS,
    LiveDecodeJob,
    LiveEncodeJob,
    StreamHub,
    decode_offline,
    encode_offline,
    live_feed,
    merge_packets,
    open_decoder,
    open_encoder,
)
from .limits import LimitError
from .sessions import (  # noqa: F401  (re-exported)
    CLOSE_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    DecodeSession,
    EncodeSession,
    Pace,
    Session,
    StreamClosed,
    send_json,
)

router = APIRouter()


def stream_hub(ws: WebSocket) -> StreamHub:
    """The app's stream hub (a FastAPI dependency): ``app.state.hub``, set by ``create_app``."""
    return ws.app.state.hub


Hub = Annotated[StreamHub, Depends(stream_hub)]


@router.websocket("/v1/stream/encode")
async def stream_encode(ws: WebSocket, hub: Hub) -> None:
    await serve(ws, EncodeSession(ws, hub))


@router.websocket("/v1/stream/decode")
async def stream_decode(ws: WebSocket, hub: Hub) -> None:
    await serve(ws, DecodeSession(ws, hub))


async def serve(ws: WebSocket, session: Session) -> None:
    """Accept, check the stream limit, run ``session``, and turn every failure into an error + close."""
    hub = session.hub
    await ws.accept()
    if not hub.try_open():
        await _fail(
            ws,
            "too_many_streams",
            f"the server is at its limit of {hub.settings.max_streams} concurrent streams; try again later",
            CLOSE_TRY_LATER,
        )
        return
    try:
        await session.run()
    except StreamClosed as e:
        await _fail(ws, e.kind, str(e), e.code)
    except LimitError as e:
        await _fail(ws, "too_large", str(e), CLOSE_POLICY)
    except RvqkitError as e:
        await _fail(ws, "bad_request", str(e), CLOSE_POLICY)
    except WebSocketDisconnect:
        pass
    except Exception as e:  # a real fault: tell the client, keep the server up
        await _fail(ws, "internal", f"internal error ({type(e).__name__})", CLOSE_ERROR)
    finally:
        hub.release()


async def _fail(ws: WebSocket, kind: str, message: str, code: int) -> None:
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:  # bounded: a client that does not read must not hold the connection open
            await asyncio.wait_for(send_json(ws, {"type": "error", "error": kind, "message": message}), 5.0)
            await asyncio.wait_for(ws.close(code=code, reason=kind[:100]), 5.0)
        except Exception:  # the client went away first, or does not read
            pass
