"""Admission control: who may use the one model, and when.

- :class:`ModelGate` lets one user at a time run the model (on CPU concurrent calls only compete for the
  same cores). Live stream steps go first: a REST job runs in pieces (``job_piece_s`` of audio each),
  and gives the gate back between two pieces, so a waiting stream step runs before its next piece.
- :class:`JobQueue` admits at most ``max_jobs`` REST jobs at once (more are refused with
  :class:`BusyError`, answered 503 with ``Retry-After``), runs each in its own worker thread, and cancels
  a job whose client went away: it stops before its next piece, or while it waits for its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.requests import Request

from .limits import BusyError, ServerSettings

T = TypeVar("T")


class JobCancelled(Exception):
    """Raised inside a REST job whose client went away."""


class ModelGate:
    """A lock on the model with two classes of users: stream steps, which go first, and REST pieces."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._streams_waiting = 0

    def acquire(self, stream: bool, cancel: threading.Event | None = None) -> None:
        """Block until the model is free (and, for a REST piece, no stream step is waiting). ``cancel``
        set while waiting raises :class:`JobCancelled`."""
        with self._cond:
            if stream:
                self._streams_waiting += 1
            try:
                while self._busy or (not stream and self._streams_waiting):
                    self._cond.wait(0.1 if cancel is not None else None)
                    if cancel is not None and cancel.is_set():
                        raise JobCancelled
            finally:
                if stream:
                    self._streams_waiting -= 1
            self._busy = True

    def release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    @contextlib.contextmanager
    def hold(self, stream: bool) -> Iterator[None]:
        self.acquire(stream)
        try:
            yield
        finally:
            self.release()


class Turn:
    """A REST job's hold on the gate, given back and taken again between pieces (:meth:`piece_done`,
    which the chunked encoders and decoders call as their progress callback)."""

    def __init__(self, gate: ModelGate, cancel: threading.Event) -> None:
        self.gate, self.cancel = gate, cancel
        self.held = False
        self.pieces = 0

    def __enter__(self) -> Turn:
        self.gate.acquire(False, self.cancel)
        self.held = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.held = False
            self.gate.release()

    def piece_done(self, *_: Any) -> None:
        self.pieces += 1
        self.held = False
        self.gate.release()
        if self.cancel.is_set():
            raise JobCancelled
        self.gate.acquire(False, self.cancel)
        self.held = True


async def _disconnected(request: Request) -> None:
    """Return when the client of ``request`` (whose body has been read) goes away."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class JobQueue:
    """At most ``max_jobs`` REST jobs admitted; each runs in its own thread under a :class:`Turn`."""

    def __init__(self, gate: ModelGate, settings: ServerSettings) -> None:
        self.gate, self.settings = gate, settings
        self.admitted = 0  # jobs running or waiting for their turn
        self.cancelled = 0  # jobs stopped because their client went away (for tests and /v1/stats)
        self._pool = ThreadPoolExecutor(settings.max_jobs, thread_name_prefix="rvqkit-job")

    def admit(self) -> None:
        """Count one more job, or raise :class:`BusyError` if ``max_jobs`` are admitted already."""
        if self.admitted >= self.settings.max_jobs:
            raise BusyError(
                f"the server is busy ({self.admitted} requests running or waiting); try again later",
                self.settings.retry_after_s,
            )
        self.admitted += 1

    async def run(self, request: Request, fn: Callable[..., T], *args: Any) -> T:
        """``fn(turn, *args)`` in a job thread, admitted first (:class:`BusyError` when full). If the
        client goes away first, the job is cancelled and :class:`JobCancelled` raised here once its thread
        has stopped (a piece under way finishes first: the model cannot be interrupted mid-call)."""
        self.admit()
        cancel = threading.Event()
        try:

            def call() -> T:
                with Turn(self.gate, cancel) as turn:
                    return fn(turn, *args)

            job = asyncio.get_running_loop().run_in_executor(self._pool, call)
            gone = asyncio.ensure_future(_disconnected(request))
            try:
                waiting: set[asyncio.Future[Any]] = {job, gone}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                cancel.set()
                raise
            finally:
                gone.cancel()
                if not job.done():
                    cancel.set()
                    self.cancelled += 1
                    while not job.done():  # keep the job counted until its thread is free
                        with contextlib.suppress(asyncio.CancelledError):
                            await asyncio.wait({job})
            if cancel.is_set():
                with contextlib.suppress(BaseException):
                    job.result()
                raise JobCancelled
            return job.result()
        finally:
            self.admitted -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
