"""The server's limits: upload size and duration, concurrent streams, idle sockets, message sizes."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RvqkitError


class LimitError(RvqkitError):
    """A request beyond one of the server's limits (too large, too long, too many streams)."""


@dataclass(frozen=True)
class ServerSettings:
    """What one server accepts.

    Attributes:
        max_upload_bytes: largest request body (audio, codes or ``.ecdc`` upload), bytes.
        max_duration_s: longest audio a REST request may encode or decode, seconds.
        max_streams: concurrent WebSocket streams (encode and decode together); more are refused.
        idle_timeout_s: a socket that sends nothing for this long is closed, seconds.
        max_message_bytes: largest WebSocket message, bytes.
        max_stream_s: longest signal one streaming connection may carry, seconds.
        max_backlog_s: audio received but not yet encoded that makes a stream be closed as ``overloaded``
            (the server is not keeping up), seconds; keep it above one segment (1 s) for 48 kHz.
        batching: run the pending steps of all streams as one batched model call (when the streaming
            engine offers it) instead of one call per stream.
    """

    max_upload_bytes: int = 50 * 1024 * 1024
    max_duration_s: float = 600.0
    max_streams: int = 64
    idle_timeout_s: float = 30.0
    max_message_bytes: int = 1024 * 1024
    max_stream_s: float = 3600.0
    max_backlog_s: float = 10.0
    batching: bool = True

    def __post_init__(self) -> None:
        for name in (
            "max_upload_bytes",
            "max_duration_s",
            "max_streams",
            "idle_timeout_s",
            "max_message_bytes",
        ):
            if not getattr(self, name) > 0:
                raise LimitError(f"server setting {name} must be positive, got {getattr(self, name)!r}")

    def check_duration(self, samples: int, sample_rate: int) -> None:
        """Raise :class:`LimitError` if ``samples`` at ``sample_rate`` Hz is longer than allowed."""
        seconds = samples / sample_rate
        if seconds > self.max_duration_s:
            raise LimitError(
                f"audio is {seconds:.1f} s long; this server accepts at most {self.max_duration_s:g} s"
            )
