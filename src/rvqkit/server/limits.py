"""The server's limits and their errors: upload size and duration, the cost of one REST job, the REST job
queue, concurrent streams, idle and slow sockets, message sizes, and which hosts and origins are trusted."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import BandwidthError, RvqkitError

MAX_CODEBOOKS = 32  # the most codebooks any EnCodec model has (24 kbps at 24 kHz)
CHARS_PER_CODE = 5  # a JSON code: up to 4 digits and a comma
DEFAULT_MAX_JSON_BYTES = 2 * 1024 * 1024  # JSON parsing holds the GIL: this bounds the pause it causes


class LimitError(RvqkitError):
    """A request beyond one of the server's limits (too large, too long, too many streams)."""


class BusyError(RvqkitError):
    """The REST job queue is full: answered 503 with ``Retry-After``."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NQError(BandwidthError):
    """An ``n_q`` (codebooks to decode) outside 1..the codebooks the codes hold (error kind ``bad_n_q``)."""


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
        max_backlog_s: audio a stream may have outstanding, seconds: on the encode socket audio received
            whose codes have not been sent, on the decode socket codes received whose PCM has not been
            sent (the client not reading counts too). Beyond it the stream is closed as ``overloaded``.
            Keep it above one segment (1 s) for 48 kHz.
        batching: live streams in the same phase share the engine's batched model calls
            (``rows="batched"``); off, every stream's feeds run alone (``rows="alone"``).
        max_json_bytes: largest ``/v1/decode/json`` body, bytes; None: what ``max_duration_s`` of codes
            needs at the model's most codebooks (5 bytes a code, plus 64 KiB), at most 2 MiB. Parsing
            holds Python's GIL (about 50-200 ms a MB on a busy 2-core machine), pausing live streams, so
            the default stays small; larger codes go to ``/v1/decode`` as ``.npz``.
        max_job_samples: the most model work one REST request may ask for, in samples at the model's
            rate (audio after resampling for encode and compress, the output for decode and decompress);
            None: ``max_duration_s`` at the model's rate. Checked from headers before any work.
        max_jobs: REST requests that need the model, admitted at once (one runs, the others wait their
            turn); more are answered 503 with ``Retry-After``.
        retry_after_s: the ``Retry-After`` a 503 carries, seconds.
        job_piece_s: REST jobs run in pieces of this much audio, seconds; between two pieces any waiting
            stream step goes first, and a job whose client went away stops.
        min_stream_rate: after ``stream_grace_s``, a stream must have sent at least this many seconds of
            audio (or codes) per second it has been open, else it is closed as ``too_slow``.
        stream_grace_s: seconds a stream may take before ``min_stream_rate`` applies.
        trusted_hosts: values the ``Host`` header may take (port ignored; ``*`` allows any), against DNS
            rebinding; other hosts get 400 ``bad_host``.
        allowed_origins: origins besides the server's own allowed to open sockets and send POSTs, e.g.
            ``https://app.example:8443``; ``*`` allows any. Requests without an ``Origin`` header (not from
            a browser) are allowed.
    """

    max_upload_bytes: int = 50 * 1024 * 1024
    max_duration_s: float = 600.0
    max_streams: int = 64
    idle_timeout_s: float = 30.0
    max_message_bytes: int = 1024 * 1024
    max_stream_s: float = 3600.0
    max_backlog_s: float = 10.0
    batching: bool = True
    max_json_bytes: int | None = None
    max_job_samples: int | None = None
    max_jobs: int = 4
    retry_after_s: int = 2
    job_piece_s: float = 2.0
    min_stream_rate: float = 0.25
    stream_grace_s: float = 10.0
    trusted_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    allowed_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "max_upload_bytes",
            "max_duration_s",
            "max_streams",
            "idle_timeout_s",
            "max_message_bytes",
            "max_stream_s",
            "max_backlog_s",
            "max_jobs",
            "retry_after_s",
            "job_piece_s",
            "stream_grace_s",
        ):
            if not getattr(self, name) > 0:
                raise LimitError(f"server setting {name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_json_bytes", "max_job_samples"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise LimitError(
                    f"server setting {name} must be positive or None, got {getattr(self, name)!r}"
                )
        if not self.min_stream_rate >= 0:
            raise LimitError(f"server setting min_stream_rate must be >= 0, got {self.min_stream_rate!r}")
        if self.job_piece_s < 1.0:  # pieces under 1 s would change the codes (see rvqkit.chunked)
            raise LimitError(f"server setting job_piece_s must be at least 1 s, got {self.job_piece_s!r}")

    def job_samples(self, sample_rate: int) -> int:
        """The per-request cost cap in samples at ``sample_rate`` Hz (the model's rate)."""
        by_duration = int(self.max_duration_s * sample_rate)
        return by_duration if self.max_job_samples is None else min(self.max_job_samples, by_duration)

    def json_bytes(self, frame_rate: float) -> int:
        """The ``/v1/decode/json`` body limit for a model with ``frame_rate`` frames per second."""
        if self.max_json_bytes is not None:
            return self.max_json_bytes
        frames = math.ceil(self.max_duration_s * frame_rate) + 1
        return min(MAX_CODEBOOKS * frames * CHARS_PER_CODE + 64 * 1024, DEFAULT_MAX_JSON_BYTES)

    def check_duration(self, samples: int, sample_rate: int) -> None:
        """Raise :class:`LimitError` if ``samples`` at ``sample_rate`` Hz is longer than allowed."""
        seconds = samples / sample_rate
        if seconds > self.max_duration_s:
            raise LimitError(
                f"audio is {seconds:.1f} s long; this server accepts at most {self.max_duration_s:g} s"
            )

    def check_cost(self, samples: int, sample_rate: int) -> None:
        """Raise :class:`LimitError` if a job of ``samples`` at the model's ``sample_rate`` Hz is over the
        duration limit or the per-request cost cap."""
        self.check_duration(samples, sample_rate)
        cap = self.job_samples(sample_rate)
        if samples > cap:
            raise LimitError(f"the request needs {samples} samples of model work; the limit is {cap}")
