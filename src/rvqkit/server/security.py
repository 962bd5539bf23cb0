"""Host and Origin checks: which names the server answers to, and which web pages may use it.

A server on ``127.0.0.1`` is still reachable from any web page the user opens: the page can POST a form
to it or open a WebSocket (browsers allow both across origins), and a DNS-rebinding page can make its
own name point at ``127.0.0.1`` and then read the answers. Two checks close both:

- the ``Host`` header must be a trusted host (the names the server is started for; a rebinding page's
  requests carry its own name), else 400 ``bad_host``;
- a request from a browser (with an ``Origin`` header) that opens a WebSocket or changes state (any
  method but GET, HEAD, OPTIONS) must come from the server's own origin or an allowed one, else 403
  ``forbidden_origin``. Clients that are not browsers send no ``Origin`` and are not affected.

Starlette's ``TrustedHostMiddleware`` answers in plain text and drops the port without handling IPv6
literals; this one answers in the API's JSON error format and covers the Origin rule too.
"""

from __future__ import annotations

import contextlib
import socket
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
WILDCARD_BINDS = {"0.0.0.0", "::", ""}


def host_name(host: str) -> str:
    """``Host`` header value (or a configured name) without its port and IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def trusted_hosts_for(bind: str, extra: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """The trusted ``Host`` names for a server bound to ``bind``: localhost, 127.0.0.1 and ::1, the bind
    address itself, and for a wildcard bind (0.0.0.0 or ::) this machine's host names and addresses;
    plus ``extra`` (``*`` trusts any host)."""
    names = ["localhost", "127.0.0.1", "::1"]
    if bind.strip() in WILDCARD_BINDS:
        names += [socket.gethostname(), socket.getfqdn()]
        with contextlib.suppress(OSError):  # no resolvable host name: the names above still work
            names += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)]
    else:
        names.append(bind)
    names += list(extra)
    return tuple(dict.fromkeys(host_name(n) if n != "*" else n for n in names if n))


class HostOriginGuard:
    """ASGI middleware applying the module's two rules to HTTP requests and WebSocket handshakes."""

    def __init__(self, app, trusted_hosts: tuple[str, ...], allowed_origins: tuple[str, ...]) -> None:
        self.app = app
        self.any_host = "*" in trusted_hosts
        self.hosts = {host_name(h) for h in trusted_hosts if h != "*"}
        self.any_origin = "*" in allowed_origins
        self.origins = {o.strip().lower().rstrip("/") for o in allowed_origins if o != "*"}

    def host_ok(self, host: str) -> bool:
        if self.any_host:
            return True
        name = host_name(host)
        return name in self.hosts or any(h.startswith("*.") and name.endswith(h[1:]) for h in self.hosts)

    def origin_ok(self, origin: str, host: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if self.any_origin or origin in self.origins:
            return True
        parts = urlsplit(origin)
        return (
            parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc == host.strip().lower()
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        origin = headers.get("origin")
        if not self.host_ok(host):
            return await self._deny(
                scope,
                receive,
                send,
                400,
                "bad_host",
                f"this server does not answer to the host {host_name(host)!r}; the server's trusted_hosts "
                "setting lists the names it answers to",
            )
        check_origin = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        if check_origin and origin is not None and not self.origin_ok(origin, host):
            return await self._deny(
                scope,
                receive,
                send,
                403,
                "forbidden_origin",
                f"requests from the web page at {origin!r} are not allowed; the server's allowed_origins "
                "setting lists the pages it accepts",
            )
        await self.app(scope, receive, send)

    @staticmethod
    async def _deny(scope, receive, send, status: int, kind: str, message: str) -> None:
        response = JSONResponse({"error": kind, "message": message}, status_code=status)
        if scope["type"] == "http":
            return await response(scope, receive, send)
        ws = WebSocket(scope, receive, send)
        if "websocket.http.response" in scope.get("extensions", {}):
            await ws.send_denial_response(response)  # the handshake fails with this status and body
        else:
            await ws.close(code=1008, reason=kind)
