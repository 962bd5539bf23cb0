"""Writing a file so that it is either whole or absent: a temporary file beside the target, fsynced,
then renamed over it. Used for the corpus shards and records and for ``.ecdc`` files; a killed process
leaves at most a temporary file (named with :data:`TMP_MARK`), never a truncated target."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TMP_MARK = ".tmp-"  # in temporary file names: ``name.tmp-<pid>``


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write through ``write(tmp)`` to a temporary file next to ``path``, fsync it, rename it into place."""
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
