"""Look at a source file before anyone opens it: regular files only, and the same file the job listed.

A FIFO, socket or device is never opened (opening a FIFO blocks until a writer comes, which would hang
a worker and the job); a file that is gone or has another size or modification time than when the
job listed it is not encoded, so a resumed job never mixes two versions of its inputs.
"""

from __future__ import annotations

import os
import stat as st
import time

# (reason, message) for errors.jsonl, or None when the file is fine
Problem = tuple[str, str] | None


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in (
        (st.S_ISDIR, "a folder"),
        (st.S_ISFIFO, "a FIFO (named pipe)"),
        (st.S_ISSOCK, "a socket"),
        (st.S_ISCHR, "a character device"),
        (st.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def stat_file(path: str) -> tuple[tuple[int, int] | None, Problem]:
    """``((size, mtime_ns), None)`` for a regular file (symbolic links followed), else ``(None, problem)``
    with reason ``unreadable``, ``broken_link`` or ``special_file``. Does not open the file."""
    try:
        s = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return None, ("broken_link", f"symbolic link to a missing file ({os.readlink(path)})")
        return None, ("unreadable", "no such file")
    except OSError as e:  # permission denied on a folder above it, a symbolic link loop ...
        return None, ("unreadable", f"cannot look at the file ({e.strerror or e})")
    if not st.S_ISREG(s.st_mode):
        return None, ("special_file", f"{kind_of(s.st_mode)}, not an audio file; not opened")
    return (int(s.st_size), int(s.st_mtime_ns)), None


def check_listed(path: str, listed: tuple[int, int] | None) -> Problem:
    """Whether ``path`` can be opened now: a regular file and, when ``listed`` (size, mtime_ns) is
    given, the same size and modification time as when the job listed it (reasons ``vanished`` and
    ``changed``)."""
    now, problem = stat_file(path)
    if problem is not None:
        if listed is not None and problem[0] in ("unreadable", "broken_link") and not os.path.lexists(path):
            return "vanished", "the file is gone since the job listed it"
        return problem
    if listed is not None and now != tuple(listed):
        return "changed", (
            f"the file changed since the job listed it (size {listed[0]} -> {now[0]} bytes, "  # type: ignore[index]  # listed: a stat pair
            f"modified {_when(listed[1])} -> {_when(now[1])}); "  # type: ignore[index]  # listed: a stat pair
            "start a new job to encode the new version"
        )
    return None


def _when(mtime_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9))
