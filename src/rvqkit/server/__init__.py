"""rvqkit as a service: a FastAPI app with REST encode/decode/compress, WebSocket streaming and a browser
page (``pip install rvqkit[server]``; run with ``rvqkit serve``)."""

from __future__ import annotations

from .limits import LimitError, ServerSettings

__all__ = ["LimitError", "ServerSettings", "create_app"]


def create_app(codec, settings: ServerSettings | None = None):
    """The FastAPI app serving ``codec`` (see :func:`rvqkit.server.app.create_app`)."""
    from .app import create_app as _create_app

    return _create_app(codec, settings)
