"""Progress of a corpus job, reported through a callback (the command line draws a bar from it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class EncodeProgress:
    """Where a job stands.

    ``done`` counts every item with a result, as soon as the model has encoded it (or it failed),
    items of shards finished by an earlier run included (``resumed``); ``audio_seconds`` and ``elapsed``
    are this run's, so :attr:`rtf` is this run's speed.
    """

    total: int  # items of the job
    done: int  # items with a result (row or error)
    resumed: int  # items of shards an earlier run finished
    errors: int  # items without a row, this run
    audio_seconds: float  # encoded by this run (original durations)
    elapsed: float  # seconds since this run started encoding

    @property
    def rtf(self) -> float | None:
        """Real-time factor: processing seconds per audio second (0.01 is 100x faster than real time)."""
        return self.elapsed / self.audio_seconds if self.audio_seconds > 0 else None


ProgressCallback = Callable[[EncodeProgress], None]


class JobProgress:
    """Counts items and audio seconds and hands an :class:`EncodeProgress` to ``callback`` after each
    change (no output of its own)."""

    def __init__(self, total: int, done: int = 0, callback: ProgressCallback | None = None):
        self.total, self.done, self.resumed = total, done, done
        self.audio_seconds = 0.0
        self.errors = 0
        self.start = time.perf_counter()
        self.callback = callback

    def snapshot(self) -> EncodeProgress:
        return EncodeProgress(
            self.total,
            self.done,
            self.resumed,
            self.errors,
            self.audio_seconds,
            time.perf_counter() - self.start,
        )

    def report(self) -> None:
        if self.callback is not None:
            self.callback(self.snapshot())

    def advance(self, items: int, audio_seconds: float, errors: int = 0) -> None:
        self.done += items
        self.audio_seconds += audio_seconds
        self.errors += errors
        self.report()


def speedup(rtf: float) -> str:
    """``"35x"`` / ``"0.42x"``: how many audio seconds per wall second."""
    x = 1 / rtf
    return f"{x:.0f}x" if x >= 10 else f"{x:.2g}x"
