"""A progress bar on stderr (rich): items done, audio hours encoded, and the speed in real time."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class JobProgress:
    """Counts items and audio seconds; shows ``items``, ``hours`` and the real-time factor.

    The real-time factor (RTF) is processing time over audio time: 0.01 means 100x faster than real time.
    Items finished by an earlier run are counted as done from the start, not in the speed.
    """

    def __init__(self, total: int, done: int = 0, enabled: bool = True, console: Console | None = None):
        self.total, self.done = total, done
        self.audio_seconds = 0.0
        self.errors = 0
        self.start = time.perf_counter()
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]encoding"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("items"),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=console or Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task("encode", total=total, completed=done, stats="")

    def __enter__(self) -> JobProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.refresh()
            self._progress.stop()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rtf(self) -> float | None:
        return self.elapsed / self.audio_seconds if self.audio_seconds > 0 else None

    def stats(self) -> str:
        rtf = self.rtf
        speed = f"RTF {rtf:.3g} ({speedup(rtf)} real time)" if rtf else "RTF -"
        return f"{self.audio_seconds / 3600:.3f} h audio, {speed}, {self.errors} errors"

    def advance(self, items: int, audio_seconds: float, errors: int = 0) -> None:
        self.done += items
        self.audio_seconds += audio_seconds
        self.errors += errors
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, stats=self.stats())


def speedup(rtf: float) -> str:
    """``"35x"`` / ``"0.42x"``: how many audio seconds per wall second."""
    x = 1 / rtf
    return f"{x:.0f}x" if x >= 10 else f"{x:.2g}x"
