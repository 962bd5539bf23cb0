"""Errors as the server answers them: the error kinds, the JSON error body, the exception handlers, the
request body limit (ASGI middleware) and the error responses the OpenAPI schema lists."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import AudioError, BandwidthError, CodesError, RvqkitError, WeightsError
from .gate import JobCancelled
from .inputs import JSONBodyError
from .limits import BusyError, LimitError, NQError
from .schemas import ErrorResponse

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


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    """The JSON error body (:class:`ErrorResponse`) with HTTP ``status``."""
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
        too_large = error_response(413, "too_large", f"request body is larger than {self.limit} bytes")
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


async def _limit(request: Request, exc: LimitError) -> JSONResponse:
    return error_response(413, "too_large", str(exc))


async def _busy(request: Request, exc: BusyError) -> JSONResponse:
    response = error_response(503, "busy", str(exc))
    response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


async def _gone(request: Request, exc: JobCancelled) -> Response:
    return Response(status_code=499)  # nobody is listening; the status is for the access log


async def _json_body(request: Request, exc: JSONBodyError) -> JSONResponse:
    return error_response(422, "bad_request", str(exc))


async def _rvqkit(request: Request, exc: RvqkitError) -> JSONResponse:
    return error_response(400, error_kind(exc), str(exc))


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return error_response(422, "bad_request", "; ".join(parts) or "invalid request")


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, f"http_{exc.status_code}", str(exc.detail))


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    return error_response(500, "internal", f"internal server error ({type(exc).__name__})")


HANDLERS: list[tuple[type[Exception], Any]] = [
    (LimitError, _limit),
    (BusyError, _busy),
    (JobCancelled, _gone),
    (JSONBodyError, _json_body),
    (RvqkitError, _rvqkit),
    (RequestValidationError, _validation),
    (StarletteHTTPException, _http),
    (Exception, _internal),
]


def add_error_handlers(app: FastAPI) -> None:
    """Answer every exception with the JSON error body: 413 too_large, 503 busy (with Retry-After), 499
    for a client gone, 422 bad_request, 400 with the error's kind, the HTTP status's own, else 500."""
    for cls, handler in HANDLERS:
        app.add_exception_handler(cls, handler)
