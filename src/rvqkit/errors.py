"""The one error family rvqkit raises for bad input; the CLI turns it into one line and exit 1."""

from __future__ import annotations

import errno


class RvqkitError(Exception):
    """Base class of every error rvqkit reports about the user's input, files or weights."""


class AudioError(RvqkitError):
    """Audio that cannot be used: unreadable, empty, NaN/Inf, wrong shape or dtype."""


class BandwidthError(RvqkitError):
    """A bandwidth (kbps) or codebook count the model does not have."""


class WeightsError(RvqkitError):
    """Weights that cannot be found, fail their checksum, or do not fit the model."""


class CodesError(RvqkitError):
    """An encoded value or codes file that is malformed or made by another model."""


class InputError(RvqkitError):
    """An input path that cannot be read as given: missing, a folder, a symlink loop, no permission."""


class OutputError(RvqkitError):
    """An output that cannot be written: a folder given as the file, a missing or read-only folder, no
    permission, a full disk (ENOSPC), a symlink loop."""


_REASONS = {
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop?)",
    errno.ENOSPC: "no space left on the device (the disk is full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
}


def os_error(e: OSError, path: object, output: bool) -> RvqkitError:
    """The :class:`InputError` or :class:`OutputError` for an ``OSError`` met reading or writing ``path``
    (raise it ``from e``, so that the cause is kept)."""
    reason = _REASONS.get(e.errno or 0, e.strerror or str(e))
    if output:
        return OutputError(f"cannot write {path}: {reason}")
    return InputError(f"cannot read {path}: {reason}")
