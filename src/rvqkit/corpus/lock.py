"""One live job per output folder: ``OUT_DIR/.lock``.

The lock is ``fcntl.flock`` on the lock file: the kernel holds it for the process and drops it when the
process ends, however it ends (``kill -9`` included), so a lock can never outlive its job, and no
clean-up or timeout is needed. The file itself only says who holds it (pid, host, start time, as
JSON); the holder empties it when it finishes. A file that still names someone while its lock is free
was left by a job that did not finish (killed, crashed): the next job takes the lock over and says so.

``flock`` is advisory and, on network file systems, only as good as their lock support (NFSv4 and
Lustre pass it between machines; a mount with ``local_lock=flock`` keeps it per machine). Where
``flock`` is not available at all, the file is used as a pid file: a job named in it that still runs
on this host keeps the folder, one that does not is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .items import CorpusError

try:
    import fcntl
except ImportError:  # not on Windows: the pid-file fallback below
    fcntl = None  # type: ignore[assignment]  # the module or None

LOCK_NAME = ".lock"


def _holder_text(info: dict[str, Any]) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {when}"


def _alive_here(info: dict[str, Any]) -> bool:
    """Whether the process named in ``info`` runs on this host (unknown hosts count as alive)."""
    if info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True  # another user's process, or no pid to check
    return True


class JobLock:
    """``with JobLock(folder) as lock:`` holds ``folder/.lock`` for this process; ``lock.note`` says
    whether a stale lock was taken over. Raises :class:`CorpusError` naming the holder when another
    live job has it."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.path = Path(folder) / LOCK_NAME
        self.note: str | None = None
        self._fd: int | None = None

    def _read(self) -> dict[str, Any] | None:
        try:
            text = os.pread(self._fd, 65536, 0).decode("utf-8", "replace") if self._fd is not None else ""
            return json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return {"pid": "?", "host": "?"}

    def acquire(self) -> JobLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._fd = fd
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    locked = True
                except BlockingIOError as e:
                    info = self._read() or {}
                    raise CorpusError(
                        f"{self.path.parent} is in use by another rvqkit corpus job ({_holder_text(info)}); "
                        f"wait for it to finish or stop it (lock file {self.path})"
                    ) from e
                except OSError:  # no flock on this file system
                    locked = False
            else:
                locked = False
            old = self._read()
            if old is not None:
                if not locked and _alive_here(old):
                    raise CorpusError(
                        f"{self.path.parent} is in use by another rvqkit corpus job ({_holder_text(old)}), "
                        f"as far as {self.path} says (this file system has no flock); if that job is gone, "
                        "delete the lock file"
                    )
                self.note = (
                    f"took over {self.path} from a job that did not finish ({_holder_text(old)}); "
                    "resuming its work"
                )
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except BaseException:
            self._fd = None
            os.close(fd)
            raise
        return self

    def release(self) -> None:
        """Empty the file (a finished job) and drop the lock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
