"""The codes file of the Mimi, DAC and SNAC models (``rvqkit encode -m <family model>``): a safe ``.npz``.

Members (NumPy ``.npz``, no pickled objects):

- ``codes`` int16 ``[n_q, frames]`` (Mimi, DAC), or for SNAC one 1-D int16 member per level,
  ``codes_0`` ... ``codes_{n_q-1}``, coarsest first (level ``i`` has ``frames / vq_strides[i]`` frames);
- ``length`` int64 scalar: the signal's samples at the model's rate (decoding gives exactly this many);
- ``meta``: UTF-8 JSON as uint8 bytes: ``format`` (``"rvqkit-family-codes"``), ``version`` (1), ``family``,
  ``model`` (the source the model was loaded from), ``sample_rate`` (Hz), ``channels``, ``n_q``,
  ``codebook_size``, ``hop_length`` (samples per finest frame), ``frame_rate`` (Hz, finest),
  ``bandwidth`` (kbps) and for SNAC ``vq_strides`` (finest frames per level frame).

EnCodec's codes file is :mod:`rvqkit.encoded` (a batch, per-segment scales); this one holds one item.
Reading is bounded as that one is (:mod:`rvqkit.npzfile`: members, dtypes and shapes from the headers,
sizes checked from ``length`` before any code is read), and every field is validated; each failure is a
:class:`CodesError`. :func:`check_family_codes` then checks a file against the model that will decode it.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .atomic import write_atomic
from .errors import BandwidthError, CodesError
from .npzfile import INTEGER, NpzReader

if TYPE_CHECKING:
    from .family_codec import FamilyCodec

FORMAT = "rvqkit-family-codes"
FORMAT_VERSION = 1
FAMILIES = ("mimi", "dac", "snac")
MAX_SECONDS = 24 * 3600  # longest signal a file may declare, at its sample rate
MAX_N_Q = 64  # codebooks (Mimi 32, DAC up to 32)
MAX_LEVELS = 8  # SNAC levels (published models: 3 or 4)
MAX_META = 1 << 16  # bytes of the JSON meta member
MAX_SAMPLE_RATE = 768_000  # Hz
MAX_CODEBOOK = 1 << 15  # codes are stored as int16
MAX_CODE_VALUES = 1 << 27  # code values in one file (24 h of DAC 44.1 kHz, 9 codebooks: 67 M)
SNAC_PAD_FRAMES = 1024  # without the model: SNAC pads at most this many finest frames past the signal


def level_name(i: int) -> str:
    return f"codes_{i}"


@dataclass
class FamilyCodes:
    """One item's codes of a Mimi, DAC or SNAC model and the facts needed to decode them.

    Attributes:
        family: ``"mimi"``, ``"dac"`` or ``"snac"``.
        codes: ``Tensor[n_q, frames]`` int64 (Mimi, DAC), or a list of ``Tensor[frames_i]`` int64 per
            level, coarsest first (SNAC), as :meth:`FamilyCodec.encode` returns them.
        length: samples of the signal at ``sample_rate``.
        sample_rate: the model's rate (Hz). channels: its audio channels.
        codebook_size: entries per codebook. hop_length: samples per (finest) frame.
        model: the source the model was loaded from (hub id, folder, file).
        vq_strides: SNAC only: finest frames per frame of each level, coarsest first.
    """

    family: str
    codes: Any
    length: int
    sample_rate: int
    channels: int
    codebook_size: int
    hop_length: int
    model: str
    vq_strides: tuple[int, ...] | None = field(default=None)

    @property
    def n_q(self) -> int:
        """Codebooks (SNAC: levels)."""
        return len(self.codes) if self.family == "snac" else int(self.codes.shape[0])

    @property
    def frame_rate(self) -> float:
        """Frames per second (Hz) at the finest rate."""
        return self.sample_rate / self.hop_length

    @property
    def bandwidth(self) -> float:
        """kbps the codes carry: frame rate x log2(codebook_size) bits per codebook (SNAC: per level, at
        each level's rate)."""
        bits = math.log2(self.codebook_size)
        if self.family == "snac":
            strides = self.vq_strides or ()
            return sum(self.frame_rate / s for s in strides[: self.n_q]) * bits / 1000
        return self.frame_rate * bits * self.n_q / 1000

    def rows(self) -> list[torch.Tensor]:
        """The codes as a list of 1-D tensors (codebooks or levels)."""
        return list(self.codes) if self.family == "snac" else [r for r in self.codes]

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "family": self.family,
            "model": self.model,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "n_q": self.n_q,
            "codebook_size": self.codebook_size,
            "hop_length": self.hop_length,
            "frame_rate": self.frame_rate,
            "bandwidth": round(self.bandwidth, 6),
        }
        if self.family == "snac":
            meta["vq_strides"] = list(self.vq_strides or ())
        return meta

    def arrays(self) -> dict[str, np.ndarray]:
        """The ``.npz`` members."""
        if self.codebook_size > MAX_CODEBOOK:
            raise CodesError(f"codebook_size {self.codebook_size} does not fit int16 codes")
        arrays: dict[str, np.ndarray] = {
            "length": np.array(int(self.length), dtype=np.int64),
            "meta": np.frombuffer(json.dumps(self.meta()).encode(), dtype=np.uint8),
        }
        if self.family == "snac":
            for i, c in enumerate(self.codes):
                arrays[level_name(i)] = torch.as_tensor(c).cpu().numpy().astype(np.int16)
        else:
            arrays["codes"] = torch.as_tensor(self.codes).cpu().numpy().astype(np.int16)
        return arrays

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays: dict[str, Any] = self.arrays()  # numpy's stub reads **arrays as maybe allow_pickle
        np.savez(buf, **arrays)
        return buf.getvalue()


def from_codec(codec: FamilyCodec, codes: Any, length: int) -> FamilyCodes:
    """The :class:`FamilyCodes` of ``codes`` (as ``codec.encode`` gave them) of a ``length``-sample signal
    at the model's rate; checked against the model (:func:`check_family_codes`)."""
    cfg = codec.config
    out = FamilyCodes(
        family=codec.family,
        codes=[c.clone() for c in codes] if codec.family == "snac" else codes,
        length=int(length),
        sample_rate=codec.sample_rate,
        channels=codec.channels,
        codebook_size=int(cfg.codebook_size),
        hop_length=int(cfg.hop_length),
        model=str(codec.source),
        vq_strides=tuple(int(s) for s in cfg.vq_strides) if codec.family == "snac" else None,
    )
    check_family_codes(out, codec)
    return out


def save_family_codes(path: str | os.PathLike[str], codes: FamilyCodes, overwrite: bool = False) -> None:
    """Write ``codes`` as a family codes file (``.npz``) atomically (a temporary file renamed into place:
    an interrupted save leaves any old file whole); refuses to replace an existing file unless
    ``overwrite``."""
    p = Path(path)
    if p.is_dir():
        raise CodesError(f"{p} is a folder")
    if os.path.lexists(p) and not overwrite:
        raise CodesError(f"{p} exists; pass overwrite=True to replace it")
    arrays: dict[str, Any] = codes.arrays()  # numpy's stub reads **arrays as maybe allow_pickle

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    try:
        write_atomic(p, write)
    except OSError as e:
        raise CodesError(f"{p}: cannot write the codes file ({e.strerror or e})") from e


def is_family_codes_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is meant as a family codes file: a zip (``.npz``) with a ``length`` member and no
    ``lengths`` (EnCodec's codes file has ``lengths``). Only the zip directory is read; False for anything
    unreadable (the loader then says why). Whether the file is valid is :func:`load_family_codes`'s."""
    try:
        with zipfile.ZipFile(Path(path)) as z:
            names = set(z.namelist())
    except (OSError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        return False
    return "length.npy" in names and "lengths.npy" not in names


def load_family_codes(path: str | os.PathLike[str], codec: FamilyCodec | None = None) -> FamilyCodes:
    """Read a family codes file written by :func:`save_family_codes`, bounded and validated: members,
    dtypes and shapes from the headers, ``length`` at most :data:`MAX_SECONDS` at the file's rate, frame
    counts consistent with ``length``, codes in ``[0, codebook_size)``. With ``codec``, also checked
    against that model (:func:`check_family_codes`). Any failure is a :class:`CodesError`."""
    return _read(Path(path), str(path), codec)


def load_family_codes_bytes(
    data: bytes, codec: FamilyCodec | None = None, what: str = "codes"
) -> FamilyCodes:
    """:func:`load_family_codes` for a file's bytes; ``what`` names it in error messages."""
    return _read(data, what, codec)


def _read(source: Path | bytes, what: str, codec: FamilyCodec | None) -> FamilyCodes:
    levels = tuple(map(level_name, range(MAX_LEVELS)))
    with NpzReader(
        source,
        what,
        required=("meta", "length"),
        optional=("codes", *levels),
        kinds={"meta": ("u",), "length": INTEGER, "codes": INTEGER, **{n: INTEGER for n in levels}},
        error=CodesError,
    ) as z:
        m = z.members
        z.check_sizes({"meta": MAX_META, "length": 1})
        meta = _read_meta(z)
        family, n_q = meta["family"], meta["n_q"]
        want = [level_name(i) for i in range(n_q)] if family == "snac" else ["codes"]
        have = sorted(n for n in m if n not in ("meta", "length"))
        if have != sorted(want):
            raise z.fail(
                f"{family} codes file: members {', '.join(have) or 'none'}; expected {', '.join(want)}"
            )
        if m["length"].shape not in ((), (1,)):
            raise z.fail(f"length has shape {m['length'].shape}; one number expected")
        length = int(z.read("length").reshape(-1)[0])
        limit = MAX_SECONDS * meta["sample_rate"]
        if not 1 <= length <= limit:
            raise z.fail(f"length {length} samples; 1 to {limit} ({MAX_SECONDS} s) expected")
        hop = meta["hop_length"]
        frames = -(-length // hop)
        if family == "snac":
            strides = meta["vq_strides"]
            finest_counts = set()
            for name, s in zip(want, strides, strict=False):
                shape = m[name].shape
                if len(shape) != 1:
                    raise z.fail(f"{name} must be 1-D [frames], got {shape}")
                finest = shape[0] * s
                if not frames <= finest <= frames + SNAC_PAD_FRAMES:
                    raise z.fail(f"{name}: {shape[0]} frames do not match length {length} samples")
                finest_counts.add(finest)
            if len(finest_counts) != 1:
                raise z.fail("SNAC levels cover different numbers of frames (vq_strides)")
        else:
            shape = m["codes"].shape
            if len(shape) != 2 or shape[0] != n_q:
                raise z.fail(f"codes must be [{n_q}, frames], got {shape}")
            if shape[1] != frames:
                raise z.fail(f"codes hold {shape[1]} frames; length {length} samples needs {frames}")
        values = sum(m[name].size for name in want)
        if values > MAX_CODE_VALUES:
            raise z.fail(f"holds {values} code values, more than the {MAX_CODE_VALUES} allowed")
        rows = [torch.from_numpy(z.read(name).astype(np.int64)) for name in want]
    size = meta["codebook_size"]
    for row in rows:
        if row.numel() and (int(row.min()) < 0 or int(row.max()) >= size):
            raise CodesError(f"{what}: codes out of range [0, {size})")
    out = FamilyCodes(
        family=family,
        codes=rows if family == "snac" else rows[0],
        length=length,
        sample_rate=meta["sample_rate"],
        channels=meta["channels"],
        codebook_size=size,
        hop_length=hop,
        model=meta["model"],
        vq_strides=tuple(meta["vq_strides"]) if family == "snac" else None,
    )
    if codec is not None:
        check_family_codes(out, codec, what)
    return out


def _read_meta(z: NpzReader) -> dict[str, Any]:
    """The meta member, every field type- and range-checked."""
    meta = z.read_meta(FORMAT, FORMAT_VERSION, "rvqkit Mimi/DAC/SNAC codes file")

    def integer(key: str, low: int, high: int) -> int:
        return z.meta_integer(meta, key, low, high)

    family = meta.get("family")
    if family not in FAMILIES:
        raise z.fail(f"meta family must be one of {', '.join(FAMILIES)}, got {family!r}")
    model = meta.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 4096 or not model.isprintable():
        raise z.fail("meta model must be the model's source (a printable string)")
    out = {
        "family": family,
        "model": model,
        "sample_rate": integer("sample_rate", 1, MAX_SAMPLE_RATE),
        "channels": integer("channels", 1, 64),
        "n_q": integer("n_q", 1, MAX_LEVELS if family == "snac" else MAX_N_Q),
        "codebook_size": integer("codebook_size", 2, MAX_CODEBOOK),
        "hop_length": integer("hop_length", 1, 1 << 20),
    }
    if family == "snac":
        strides = meta.get("vq_strides")
        if (
            not isinstance(strides, list)
            or len(strides) < out["n_q"]
            or len(strides) > MAX_LEVELS
            or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 1024 for s in strides)
        ):
            raise z.fail(f"meta vq_strides must list 1 to {MAX_LEVELS} strides, one per level at least")
        out["vq_strides"] = strides
    return out


def check_family_codes(codes: FamilyCodes, codec: FamilyCodec, what: str = "codes") -> None:
    """Raise :class:`CodesError` unless ``codes`` fit ``codec``: same family, sample rate, channels,
    codebook size and hop, ``n_q`` within the model's codebooks, frame counts those the model gives for
    ``length`` samples, codes in range."""
    names = {"mimi": "Mimi", "dac": "DAC", "snac": "SNAC"}
    if codes.family != codec.family:
        raise CodesError(
            f"{what} holds {names.get(codes.family, codes.family)} codes (made by {codes.model}); "
            f"the model is {names.get(codec.family, codec.family)} ({codec.source})"
        )
    cfg = codec.config
    mine = (codes.sample_rate, codes.channels, codes.codebook_size, codes.hop_length)
    theirs = (codec.sample_rate, codec.channels, int(cfg.codebook_size), int(cfg.hop_length))
    if mine != theirs or (codes.family == "snac" and tuple(codes.vq_strides or ()) != tuple(cfg.vq_strides)):
        raise CodesError(
            f"{what} was made by another {names[codes.family]} model ({codes.model}: {codes.sample_rate} Hz, "
            f"{codes.codebook_size} entries, hop {codes.hop_length}) than {codec.source} ({theirs[0]} Hz, "
            f"{theirs[2]} entries, hop {theirs[3]})"
        )
    if not 1 <= codes.n_q <= codec.num_codebooks:
        raise CodesError(f"{what} holds {codes.n_q} codebooks; the model has 1 to {codec.num_codebooks}")
    model = codec.model
    if codes.family == "snac":
        want = model.level_frames(codes.length)[: codes.n_q]
        got = [int(c.shape[-1]) for c in codes.codes]
    else:
        want = [model.frames_for_length(codes.length)] * codes.n_q
        got = [int(codes.codes.shape[-1])] * codes.n_q
    if got != want:
        raise CodesError(f"{what}: {got} frames for {codes.length} samples; the model gives {want}")
    for row in codes.rows():
        if row.numel() and (int(row.min()) < 0 or int(row.max()) >= codes.codebook_size):
            raise CodesError(f"{what}: codes out of range [0, {codes.codebook_size})")


# -- bandwidths ------------------------------------------------------------------------------------------
def family_bandwidths(codec: FamilyCodec) -> list[float]:
    """kbps of 1, 2, ... ``num_codebooks`` codebooks (SNAC: levels, coarsest first): frame rate (Hz) x
    log2(codebook_size) bits x codebooks / 1000 (Mimi: 0.1375 kbps per codebook, 1.1 at 8)."""
    cfg = codec.config
    bits = math.log2(int(cfg.codebook_size))
    if codec.family == "snac":
        rates = [codec.frame_rate / s for s in cfg.vq_strides]
        return [sum(rates[:k]) * bits / 1000 for k in range(1, len(rates) + 1)]
    return [codec.frame_rate * bits * k / 1000 for k in range(1, codec.num_codebooks + 1)]


def format_kbps(kbps: float) -> str:
    return f"{round(kbps, 3):g}"


def n_q_for_bandwidth(codec: FamilyCodec, bandwidth: float) -> int:
    """Codebooks (SNAC: levels) for ``bandwidth`` kbps: one of :func:`family_bandwidths`, as written to
    3 decimals (within 0.001 kbps); anything else is a :class:`BandwidthError` listing the valid ones."""
    valid = family_bandwidths(codec)
    for n_q, kbps in enumerate(valid, start=1):
        if abs(bandwidth - kbps) <= 0.0006:
            return n_q
    raise BandwidthError(
        f"bandwidth {bandwidth:g} kbps is not one of the model's; valid bandwidths (kbps): "
        + ", ".join(format_kbps(k) for k in valid)
    )
