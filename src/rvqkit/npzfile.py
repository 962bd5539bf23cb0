"""Bounded reading of ``.npz`` files (codes and token files): every member's size, dtype and shape is known
from the zip directory and the ``.npy`` headers before a byte of array data is read.

``numpy.load`` decompresses a member whole on first access, whatever its size, and opens members the
caller never asked for; a few hundred kilobytes of ``savez_compressed`` zeros then cost gigabytes. Here
the zip is opened with :mod:`zipfile`, unknown, missing and duplicate members are refused, and each
member's ``.npy`` header is read (``numpy.lib.format.read_magic`` / ``read_array_header_*``) so that the
caller can bound the cost from dtypes and shapes; :meth:`NpzReader.read` then reads exactly the bytes the
header declares (never more than the zip entry's ``file_size``), and only after
:meth:`NpzReader.check_sizes`. Object (pickle) dtypes are refused.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from .errors import RvqkitError

MAX_MEMBERS = 16  # the zip directory is read whole: refuse absurd entry counts before zipfile lists them
MAX_HEADER = 4096  # bytes of an .npy header (numpy writes 128 for a few dimensions)
MAX_RATIO = 256  # uncompressed : compressed size of a deflated member larger than RATIO_FREE
RATIO_FREE = 1 << 20  # members up to 1 MiB may compress as well as they like

# dtype kinds (numpy ``dtype.kind``): signed / unsigned integers, floats, bool, bytes
INTEGER = ("i", "u")
FLOAT = ("f",)
BOOL = ("b",)


@dataclass(frozen=True)
class Member:
    """One array of the archive, as its ``.npy`` header declares it."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    info: zipfile.ZipInfo
    header_size: int  # bytes before the array data

    @property
    def size(self) -> int:
        """Elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


class NpzReader:
    """An ``.npz`` archive opened for bounded reading; use as a context manager.

    Args:
        source: a path or the file's bytes.
        what: how error messages name the file (a path, "uploaded codes" ...).
        required: member names (without ``.npy``) that must be present.
        optional: member names that may be present; any other member is refused.
        kinds: allowed ``dtype.kind`` values per member name.
        error: the :class:`RvqkitError` subclass raised for a bad file.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | bytes,
        what: str,
        required: tuple[str, ...],
        optional: tuple[str, ...],
        kinds: dict[str, tuple[str, ...]],
        error: type[RvqkitError],
    ) -> None:
        self.what = what
        self.error = error
        try:
            if isinstance(source, (bytes, bytearray, memoryview)):
                fileobj: io.BufferedIOBase = io.BytesIO(bytes(source))
            else:
                fileobj = open(Path(source), "rb")  # noqa: SIM115 (owned by the ZipFile below)
            try:
                self._check_entry_count(fileobj)
                self._zip = zipfile.ZipFile(fileobj)
                self._file = fileobj
            except BaseException:
                fileobj.close()
                raise
        except FileNotFoundError as e:
            raise error(f"{what}: no such file") from e
        except IsADirectoryError as e:
            raise error(f"{what}: is a folder, not a file") from e
        except RvqkitError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            raise error(f"{what}: not a readable .npz file ({type(e).__name__}: {e})") from e
        try:
            self.members = self._read_headers(required, optional, kinds)
        except BaseException:
            self.close()
            raise

    def _check_entry_count(self, f: io.BufferedIOBase) -> None:
        """Refuse an archive whose end record declares more than :data:`MAX_MEMBERS` entries, before
        :class:`zipfile.ZipFile` builds a ``ZipInfo`` for each (zipfile has no limit of its own; the end
        record is 22 bytes plus a comment of at most 64 KiB at the end of the file)."""
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - (22 + 0xFFFF)))
        tail = f.read()
        f.seek(0)
        at = tail.rfind(b"PK\x05\x06")
        if at >= 0 and len(tail) >= at + 12:
            count = int.from_bytes(tail[at + 10 : at + 12], "little")  # total entries (16 bits)
            if count > MAX_MEMBERS:
                raise self.fail(f"{count} archive members; at most {MAX_MEMBERS} expected")

    def fail(self, message: str) -> RvqkitError:
        return self.error(f"{self.what}: {message}")

    def _read_headers(
        self, required: tuple[str, ...], optional: tuple[str, ...], kinds: dict[str, tuple[str, ...]]
    ) -> dict[str, Member]:
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise self.fail(f"{len(infos)} archive members; at most {MAX_MEMBERS} expected")
        members: dict[str, Member] = {}
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise self.fail(f"unexpected member {info.filename!r} (not an .npy array)")
            name = info.filename[: -len(".npy")]
            if name not in required and name not in optional:
                raise self.fail(f"unexpected member {name!r}; expected {', '.join(required + optional)}")
            if name in members:
                raise self.fail(f"member {name!r} appears twice")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise self.fail(f"member {name!r} uses an unsupported compression ({info.compress_type})")
            if info.flag_bits & 0x1:
                raise self.fail(f"member {name!r} is encrypted")
            if (
                info.compress_type == zipfile.ZIP_DEFLATED
                and info.file_size > RATIO_FREE
                and info.file_size > MAX_RATIO * max(info.compress_size, 1)
            ):
                raise self.fail(
                    f"member {name!r} expands {info.compress_size} bytes to {info.file_size}"
                    f" (more than {MAX_RATIO}:1)"
                )
            members[name] = self._header(name, info, kinds.get(name))
        missing = [n for n in required if n not in members]
        if missing:
            raise self.fail(f"missing member(s) {', '.join(missing)}")
        return members

    def _header(self, name: str, info: zipfile.ZipInfo, kinds: tuple[str, ...] | None) -> Member:
        try:
            with self._zip.open(info) as f:
                version = npy_format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = npy_format.read_array_header_1_0(f, max_header_size=MAX_HEADER)
                elif version == (2, 0):
                    shape, fortran, dtype = npy_format.read_array_header_2_0(f, max_header_size=MAX_HEADER)
                else:
                    raise self.fail(f"member {name!r}: .npy version {version} is not supported")
                header_size = f.tell()
        except RvqkitError:
            raise
        except Exception as e:  # ValueError (bad header), zipfile.BadZipFile, zlib.error, EOFError ...
            raise self.fail(f"member {name!r} is not a readable .npy array ({type(e).__name__}: {e})") from e
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise self.fail(f"member {name!r} has dtype {dtype}; plain numbers expected (no pickled objects)")
        if kinds is not None and dtype.kind not in kinds:
            raise self.fail(f"member {name!r} has dtype {dtype}, which is not allowed here")
        m = Member(name, dtype, tuple(int(n) for n in shape), bool(fortran), info, header_size)
        if m.header_size + m.nbytes != info.file_size:
            raise self.fail(
                f"member {name!r}: header declares {m.shape} {dtype} ({m.nbytes} bytes), the archive holds "
                f"{info.file_size - m.header_size}"
            )
        return m

    def check_sizes(self, limits: dict[str, int]) -> None:
        """Refuse members with more elements than ``limits[name]``."""
        for name, limit in limits.items():
            m = self.members.get(name)
            if m is not None and m.size > limit:
                raise self.fail(f"member {name!r} holds {m.size} values, more than the {limit} allowed")

    def read_json(self, name: str, what: str) -> Any:
        """The member ``name`` (1-D uint8 bytes of UTF-8 JSON) parsed; ``what`` is the error message when it
        is not JSON (the parser's reason follows in parentheses)."""
        m = self.members[name]
        if m.dtype.itemsize != 1 or len(m.shape) != 1:
            raise self.fail(f"member {name!r} must be 1-D uint8 bytes")
        try:
            return json.loads(self.read(name).tobytes().decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise self.fail(f"{what} ({e})") from e

    def read_meta(self, fmt: str, version: int, kind: str) -> dict[str, Any]:
        """The JSON ``meta`` member of a file of format ``fmt`` and ``version`` (``kind`` names the file in
        the error when the format differs); its fields are the caller's to check (:meth:`meta_integer`)."""
        meta = self.read_json("meta", "corrupt codes file: meta is not JSON")
        if not isinstance(meta, dict) or meta.get("format") != fmt:
            raise self.fail(f"not an {kind}")
        if meta.get("version") != version:
            raise self.fail(f"codes file version {meta.get('version')!r} is not supported")
        return meta

    def meta_integer(self, meta: dict[str, Any], key: str, low: int, high: int) -> int:
        """``meta[key]``, which must be an integer (not a bool) in ``[low, high]``."""
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise self.fail(f"meta {key} must be an integer in [{low}, {high}], got {v!r}")
        return v

    def read(self, name: str) -> np.ndarray:
        """The member's array (native byte order), reading exactly the bytes its header declared."""
        m = self.members[name]
        try:
            with self._zip.open(m.info) as f:
                f.read(m.header_size)
                data = f.read(m.nbytes)
        except Exception as e:  # bad CRC, truncated deflate stream ...
            raise self.fail(f"member {name!r} is damaged ({type(e).__name__}: {e})") from e
        if len(data) != m.nbytes:
            raise self.fail(f"member {name!r} is truncated")
        a = np.frombuffer(data, dtype=m.dtype)
        a = a.reshape(m.shape[::-1]).T if m.fortran_order else a.reshape(m.shape)
        return a.astype(m.dtype.newbyteorder("="), copy=True)

    def close(self) -> None:
        self._zip.close()
        self._file.close()

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
