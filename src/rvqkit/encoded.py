"""The encoded value (codes plus what is needed to decode them) and its safe ``.npz`` file format.

The file is a NumPy ``.npz`` with no pickled objects: ``codes`` int16 ``[batch, n_q, frames]``,
``lengths`` int64 ``[batch]`` (samples at the model rate), ``frame_lengths`` int64 ``[batch]``, ``scales``
float32 ``[batch, segments]`` (48 kHz model only) and ``meta``, UTF-8 JSON as uint8 bytes.

Reading is bounded (:mod:`rvqkit.npzfile`): members, dtypes and shapes are checked from the zip directory
and the ``.npy`` headers, and the cost (``batch × longest length`` samples, code values) from the
lengths, before the codes are read. Every field is then validated: lengths positive and consistent with
the frame counts (closed-form arithmetic, no per-segment lists), codes integers in the codebook's range,
scales finite and > 0.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import write_atomic
from .config import PRESETS, CodecConfig
from .errors import CodesError
from .framing import frames_for_length, segment_count
from .npzfile import FLOAT, INTEGER, NpzReader

FORMAT = "rvqkit-codes"
FORMAT_VERSION = 1

MAX_FILE_SECONDS = 24 * 3600  # default bound of a file's cost: batch × longest item, at its sample rate
MAX_ITEMS = 1 << 16  # items in one file
MAX_N_Q = 64  # codebooks in one file (EnCodec: 32 at 24 kHz, 16 at 48 kHz)
MAX_META = 1 << 16  # bytes of the JSON meta member
MAX_SAMPLE_RATE = 768_000  # Hz
SAMPLES_PER_CODE = 8  # a file holds at most one code value per 8 declared samples (EnCodec: 10 or more)


def _int_list(t: torch.Tensor, name: str) -> list[int]:
    """A 1-D integer tensor as Python ints; floats, bools and complex values are refused."""
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise CodesError(f"{name} must be integers, got dtype {t.dtype}")
    return [int(n) for n in t.reshape(-1).tolist()]


def check_fields(encoded: Encoded, cfg: CodecConfig) -> None:
    """Raise :class:`CodesError` unless ``encoded``'s fields fit a model with config ``cfg``: per-item
    lengths (samples) positive and consistent with ``frame_lengths`` (checked arithmetically before any
    allocation), codes integers in ``[0, codebook_size)``, at most ``cfg.num_codebooks`` codebooks, and
    per-segment scales present, finite and > 0 where the model needs them (none where it does not).
    Model name, rate and channels are the caller's to compare."""
    codes = encoded.codes
    if not isinstance(codes, torch.Tensor) or codes.ndim != 3:
        raise CodesError("codes must be a tensor [batch, n_q, frames]")
    if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
        raise CodesError(f"codes must be integers, got dtype {codes.dtype}")
    batch, n_q, width = codes.shape
    if batch < 1:
        raise CodesError("codes hold no items (empty batch)")
    if not 1 <= n_q <= cfg.num_codebooks:
        raise CodesError(f"codes hold {n_q} codebooks, the model has 1 to {cfg.num_codebooks}")
    lengths = _int_list(torch.as_tensor(encoded.lengths), "lengths")
    frames = _int_list(torch.as_tensor(encoded.frame_lengths), "frame_lengths")
    if len(lengths) != batch or len(frames) != batch:
        raise CodesError(f"{len(lengths)} lengths and {len(frames)} frame_lengths for {batch} items")
    for i, (n, f) in enumerate(zip(lengths, frames, strict=True)):
        if n <= 0:
            raise CodesError(f"item {i}: length {n} samples; lengths must be positive")
        if frames_for_length(cfg, n) != f:
            raise CodesError(f"item {i}: length {n} samples does not match {f} frames")
        if f > width:
            raise CodesError(f"item {i}: {f} frames declared, {width} held")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= cfg.codebook_size):
        raise CodesError(f"codes out of range [0, {cfg.codebook_size})")
    if not cfg.normalize:
        return
    need = [segment_count(cfg, n) for n in lengths]
    scales = encoded.scales
    if scales is None or scales.ndim != 2 or scales.shape[0] != batch or scales.shape[-1] < max(need):
        raise CodesError(f"{cfg.name} codes need per-segment scales ({max(need)} per item)")
    if not scales.is_floating_point():
        raise CodesError(f"scales must be floats, got dtype {scales.dtype}")
    for i, k in enumerate(need):
        s = scales[i, :k]
        if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
            raise CodesError(f"item {i}: scales must be finite and > 0")


@dataclass
class Encoded:
    """Codes of a batch of signals and the facts needed to decode them.

    Attributes:
        codes: int64 ``[batch, n_q, frames]``; items shorter than the longest are zero-padded past
            ``frame_lengths``. (int16 only from ``encode_file(codes_dtype=torch.int16)``, to be saved.)
        scales: float ``[batch, segments]`` per-segment RMS scales (48 kHz model), else None.
        lengths: int64 ``[batch]`` original lengths in samples at ``sample_rate``.
        frame_lengths: int64 ``[batch]`` valid code frames per item.
        sample_rate: model sample rate in Hz.
        channels: model channel count.
        bandwidth: kbps the codes carry (n_q × 10 bits × frame rate).
        model: model name, e.g. ``encodec_24khz``.
        weights_sha256: sha256 of the weights file the codes were made with, if known.
    """

    codes: torch.Tensor
    scales: torch.Tensor | None
    lengths: torch.Tensor
    frame_lengths: torch.Tensor
    sample_rate: int
    channels: int
    bandwidth: float
    model: str
    weights_sha256: str | None = None

    @property
    def n_q(self) -> int:
        return int(self.codes.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.codes.shape[0])

    def items(self) -> list[torch.Tensor]:
        """Each item's codes ``[n_q, frames_i]``, trimmed to its ``frame_lengths`` (views, no copies)."""
        return [self.codes[i, :, : int(n)] for i, n in enumerate(self.frame_lengths.tolist())]

    def mask(self) -> torch.Tensor:
        """Boolean ``[batch, frames]``: True where a frame holds real codes."""
        frames = torch.arange(self.codes.shape[-1], device=self.codes.device)
        return frames[None, :] < self.frame_lengths.to(self.codes.device)[:, None]

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": self.model,
            "weights_sha256": self.weights_sha256,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "bandwidth": self.bandwidth,
            "n_q": self.n_q,
        }

    def to_bytes(self) -> bytes:
        """The codes file (``.npz``) as bytes."""
        buf = io.BytesIO()
        arrays: dict[str, Any] = self._arrays()  # numpy's stub reads **arrays as maybe allow_pickle
        np.savez(buf, **arrays)
        return buf.getvalue()

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {
            "codes": self.codes.cpu().numpy().astype(np.int16, copy=False),  # no copy when int16 already
            "lengths": self.lengths.cpu().numpy().astype(np.int64),
            "frame_lengths": self.frame_lengths.cpu().numpy().astype(np.int64),
            "meta": np.frombuffer(json.dumps(self.meta()).encode(), dtype=np.uint8),
        }
        if self.scales is not None:
            arrays["scales"] = self.scales.cpu().numpy().astype(np.float32)
        return arrays

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write the codes file (``.npz``) atomically (a temporary file renamed into place, so an
        interrupted save leaves any old file whole); refuses to replace an existing file unless
        ``overwrite``."""
        p = Path(path)
        if p.exists() and not overwrite:
            raise CodesError(f"{p} exists; pass overwrite=True to replace it")
        if p.is_dir():
            raise CodesError(f"{p} is a folder")
        arrays: dict[str, Any] = self._arrays()  # numpy's stub reads **arrays as maybe allow_pickle

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        try:
            write_atomic(p, write)
        except OSError as e:
            raise CodesError(f"{p}: cannot write the codes file ({e.strerror or e})") from e

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, max_samples: int | None = None) -> Encoded:
        """Read a codes file written by :meth:`save`; a malformed file, or one whose cost
        (``batch × longest length`` samples) exceeds ``max_samples`` (default: 24 h at the file's sample
        rate), raises :class:`CodesError` before its codes are read."""
        return cls._read(Path(path), str(path), max_samples)

    @classmethod
    def from_bytes(cls, data: bytes, *, max_samples: int | None = None, what: str = "codes") -> Encoded:
        """:meth:`load` for a codes file's bytes (an upload); ``what`` names it in error messages."""
        return cls._read(data, what, max_samples)

    @classmethod
    def _read(cls, source: Path | bytes, what: str, max_samples: int | None) -> Encoded:
        with NpzReader(
            source,
            what,
            required=("codes", "lengths", "frame_lengths", "meta"),
            optional=("scales",),
            kinds={
                "codes": INTEGER,
                "lengths": INTEGER,
                "frame_lengths": INTEGER,
                "meta": ("u",),
                "scales": FLOAT,
            },
            error=CodesError,
        ) as z:
            m = z.members
            codes_shape = m["codes"].shape
            if len(codes_shape) != 3:
                raise z.fail(f"codes must be [batch, n_q, frames], got {codes_shape}")
            batch, n_q, width = codes_shape
            if not 1 <= batch <= MAX_ITEMS:
                raise z.fail(f"{batch} items; 1 to {MAX_ITEMS} expected")
            if not 1 <= n_q <= MAX_N_Q:
                raise z.fail(f"{n_q} codebooks; 1 to {MAX_N_Q} expected")
            for name in ("lengths", "frame_lengths"):
                if m[name].shape != (batch,):
                    raise z.fail(f"{name} has shape {m[name].shape}, expected ({batch},)")
            if "scales" in m and (len(m["scales"].shape) != 2 or m["scales"].shape[0] != batch):
                raise z.fail(f"scales has shape {m['scales'].shape}, expected ({batch}, segments)")
            z.check_sizes({"meta": MAX_META, "lengths": MAX_ITEMS, "frame_lengths": MAX_ITEMS})
            meta = _read_meta(z)
            if meta["n_q"] != n_q:
                raise z.fail(f"corrupt codes file (n_q {meta['n_q']} vs codes {n_q})")
            lengths = z.read("lengths")
            frame_lengths = z.read("frame_lengths")
            if lengths.min() <= 0:
                raise z.fail("lengths must be positive numbers of samples")
            if frame_lengths.min() < 0:
                raise z.fail("frame_lengths must not be negative")
            longest = int(lengths.max())
            limit = MAX_FILE_SECONDS * meta["sample_rate"] if max_samples is None else int(max_samples)
            if batch * longest > limit:
                raise z.fail(
                    f"declares {batch} x {longest} samples, more than the {limit} allowed"
                    f" ({limit / meta['sample_rate']:.0f} s at {meta['sample_rate']} Hz)"
                )
            preset = PRESETS.get(meta["model"])
            if preset is not None and preset.sampling_rate == meta["sample_rate"]:
                most_frames = frames_for_length(preset, longest)
            else:  # a model rvqkit has no framing rules for: at most a frame per sample
                most_frames = longest
            if width > most_frames or int(frame_lengths.max()) > width:
                raise z.fail(
                    f"codes hold {width} frames, frame_lengths declare up to {int(frame_lengths.max())},"
                    f" the lengths allow at most {most_frames}"
                )
            limits = {"codes": max(limit // SAMPLES_PER_CODE, 4096)}
            if "scales" in m:
                limits["scales"] = batch * max(width, 1)  # a segment holds at least one frame
            z.check_sizes(limits)
            codes = z.read("codes")
            scales = z.read("scales") if "scales" in m else None
        if scales is not None and (not np.isfinite(scales).all() or (scales < 0).any()):
            raise CodesError(f"{what}: scales must be finite and not negative")
        return cls(
            codes=torch.from_numpy(codes.astype(np.int64)),
            scales=None if scales is None else torch.from_numpy(scales.astype(np.float32)),
            lengths=torch.from_numpy(lengths.astype(np.int64)),
            frame_lengths=torch.from_numpy(frame_lengths.astype(np.int64)),
            sample_rate=meta["sample_rate"],
            channels=meta["channels"],
            bandwidth=meta["bandwidth"],
            model=meta["model"],
            weights_sha256=meta["weights_sha256"],
        )


_SHA256 = re.compile(r"[0-9a-f]{64}")
_MODEL_NAME = re.compile(r"[\w.\-/]{1,200}")


def _read_meta(z: NpzReader) -> dict[str, Any]:
    """The codes file's JSON meta, every field type- and range-checked."""
    meta = z.read_meta(FORMAT, FORMAT_VERSION, "rvqkit codes file")

    def integer(key: str, low: int, high: int) -> int:
        return z.meta_integer(meta, key, low, high)

    bandwidth = meta.get("bandwidth")
    if (
        isinstance(bandwidth, bool)
        or not isinstance(bandwidth, (int, float))
        or not math.isfinite(bandwidth)
        or bandwidth <= 0
    ):
        raise z.fail(f"meta bandwidth must be a positive number of kbps, got {bandwidth!r}")
    model = meta.get("model")
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise z.fail(f"meta model must be a model name, got {model!r}")
    sha = meta.get("weights_sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise z.fail("meta weights_sha256 must be 64 hex digits or null")
    return {
        "model": model,
        "weights_sha256": sha,
        "sample_rate": integer("sample_rate", 1, MAX_SAMPLE_RATE),
        "channels": integer("channels", 1, 64),
        "bandwidth": float(bandwidth),
        "n_q": integer("n_q", 1, MAX_N_Q),
    }
