"""Token files, as ``rvqkit tokens`` writes them and ``rvqkit detokenize`` reads them.

``.npz``: ``ids`` int64 (``[batch, length]``, or ``[batch, n_q, steps]`` for multi-stream layouts),
``attention_mask`` bool ``[batch, length]``, ``frame_lengths`` and ``lengths`` (samples) int64 ``[batch]``,
``scales`` float32 ``[batch, segments]`` for the 48 kHz model, and ``meta``: UTF-8 JSON (uint8 bytes)
with the layout settings and the source codes' facts; no pickle. ``.json``: the same facts, each item's
ids without padding under ``items``. ``.txt``: ids only, one line per item (per stream for multi-stream
layouts, items separated by a blank line), as printed to stdout; it cannot be read back.

Reading is bounded like codes files (:mod:`rvqkit.npzfile`): members, dtypes and shapes are checked from
the ``.npy`` headers and the cost from the declared lengths before the ids are read; JSON files are
limited to :data:`MAX_JSON_BYTES`. Ids must be integers (floats, bools, complex refused), the mask bool,
lengths positive integers, scales finite.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_atomic
from ..encoded import MAX_FILE_SECONDS, MAX_ITEMS, MAX_META, MAX_N_Q, MAX_SAMPLE_RATE, SAMPLES_PER_CODE
from ..npzfile import BOOL, FLOAT, INTEGER, NpzReader
from .patterns import TokenBatch, TokenLayout
from .vocab import TokenError

FORMAT = "rvqkit-tokens"
VERSION = 1
MAX_JSON_BYTES = 32 << 20  # a JSON token file is parsed whole into Python lists: use .npz for long audio
MAX_CODEBOOK_SIZE = 1 << 16  # entries per codebook a token file may declare (EnCodec: 1024)
DEFAULT_SAMPLE_RATE = 48_000  # Hz, for the cost bound of a file whose source names no rate


@dataclass
class TokenFile:
    """What a token file holds.

    Attributes:
        layout: the token layout the ids were made with.
        ids: int64 token ids (``[batch, length]`` or ``[batch, n_q, steps]``).
        attention_mask: bool ``[batch, length]``, True at real positions.
        source: the source codes' facts: ``model``, ``weights_sha256``, ``sample_rate`` (Hz),
            ``channels``, ``bandwidth`` (kbps), and for Mimi/DAC codes ``family`` and ``family_codes``
            (the family codes file's meta); missing ones are None.
        lengths: int64 ``[batch]`` original lengths in samples, or None.
        frame_lengths: int64 ``[batch]`` code frames per item, or None.
        scales: float32 ``[batch, segments]`` (48 kHz model), or None.
    """

    layout: TokenLayout
    ids: torch.Tensor
    attention_mask: torch.Tensor
    source: dict[str, Any]
    lengths: torch.Tensor | None = None
    frame_lengths: torch.Tensor | None = None
    scales: torch.Tensor | None = None


def ids_text(items: list[torch.Tensor]) -> str:
    """One line of ids per item (per stream for multi-stream layouts, items separated by a blank line)."""
    blocks = []
    for it in items:
        rows = it[None] if it.ndim == 1 else it
        blocks.append("\n".join(" ".join(map(str, r.tolist())) for r in rows))
    return ("\n\n" if items and items[0].ndim == 2 else "\n").join(blocks) + "\n"


def source_meta(encoded: Any) -> dict[str, Any]:
    """The facts of the codes tokens were made from (an :class:`~rvqkit.Encoded`)."""
    return {
        "model": encoded.model,
        "weights_sha256": encoded.weights_sha256,
        "sample_rate": encoded.sample_rate,
        "channels": encoded.channels,
        "bandwidth": encoded.bandwidth,
        # Mimi/DAC codes (rvqkit.family_codes): the family and its codes file's meta, to write it back
        **(
            {"family": fam, "family_codes": encoded.family_meta}
            if (fam := getattr(encoded, "family", None))
            else {}
        ),
    }


def file_meta(layout: TokenLayout, encoded: Any) -> dict[str, Any]:
    """What every token file (and ``rvqkit tokens --json``) says of itself: format, version, the layout's
    settings and the source codes' facts."""
    return {"format": FORMAT, "version": VERSION, "layout": layout.settings(), "source": source_meta(encoded)}


def save_tokens(path: Path, layout: TokenLayout, batch: TokenBatch, encoded: Any) -> None:
    """Write a token file by suffix (``.npz``, ``.json``, ``.txt``) atomically (a temporary file renamed
    into place); the caller checks overwriting."""
    path = Path(path)
    suffix = path.suffix.lower()
    meta = file_meta(layout, encoded)
    if suffix == ".npz":
        arrays = {
            "ids": batch.ids.numpy(),
            "attention_mask": batch.attention_mask.numpy(),
            "frame_lengths": encoded.frame_lengths.numpy().astype(np.int64),
            "lengths": encoded.lengths.numpy().astype(np.int64),
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        }
        if encoded.scales is not None:
            arrays["scales"] = encoded.scales.numpy().astype(np.float32)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
    elif suffix == ".json":
        meta["frame_lengths"] = encoded.frame_lengths.tolist()
        meta["lengths"] = encoded.lengths.tolist()
        meta["scales"] = None if encoded.scales is None else encoded.scales.tolist()
        meta["items"] = [it.tolist() for it in batch.items()]
        data = (json.dumps(meta) + "\n").encode()
    elif suffix == ".txt":
        data = ids_text(batch.items()).encode()
    else:
        raise TokenError(f"{path}: token files end in .npz, .json or .txt")

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    write_atomic(path, write)


def read_tokens(path: str | os.PathLike[str], *, max_samples: int | None = None) -> TokenFile:
    """Read a ``.npz`` or ``.json`` token file written by :func:`save_tokens`, validating every field;
    a malformed file, or one whose cost (``batch × longest length`` samples, or its ids) exceeds
    ``max_samples`` (default: 24 h at the source's sample rate), raises :class:`TokenError`."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _read_npz(p, max_samples)
    if suffix == ".json":
        return _read_json(p, max_samples)
    raise TokenError(f"{p}: detokenize reads .npz or .json token files written by `rvqkit tokens`")


def load_tokens(
    path: Path, *, max_samples: int | None = None
) -> tuple[TokenLayout, torch.Tensor, torch.Tensor, dict[str, Any], dict[str, np.ndarray]]:
    """:func:`read_tokens` as a tuple: (layout, ids, attention mask, source facts, arrays with the
    ``lengths`` / ``frame_lengths`` / ``scales`` the file holds)."""
    f = read_tokens(path, max_samples=max_samples)
    arrays = {
        k: v.numpy()
        for k, v in (("lengths", f.lengths), ("frame_lengths", f.frame_lengths), ("scales", f.scales))
        if v is not None
    }
    return f.layout, f.ids, f.attention_mask, f.source, arrays


# -- validation ------------------------------------------------------------------------------------------
def _check_meta(meta: object, what: str) -> tuple[TokenLayout, dict[str, Any]]:
    """The layout and the source facts of a token file's meta, every field checked."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise TokenError(f"{what}: not an rvqkit token file (format {FORMAT} version {VERSION})")
    s = meta.get("layout")
    if not isinstance(s, dict):
        raise TokenError(f"{what}: malformed token layout settings")
    n_q, size = s.get("n_q"), s.get("codebook_size")
    for name, v, high in (("n_q", n_q, MAX_N_Q), ("codebook_size", size, MAX_CODEBOOK_SIZE)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
            raise TokenError(f"{what}: layout {name} must be an integer in [1, {high}], got {v!r}")
    for name in ("offset", "pad", "begin", "end"):
        v = s.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v < 2**62:
            raise TokenError(f"{what}: layout {name} id {v} is out of range")
    layout = TokenLayout.from_settings(s)
    src = meta.get("source") or {}
    if not isinstance(src, dict):
        raise TokenError(f"{what}: malformed source facts")
    model = src.get("model")
    rate = src.get("sample_rate")
    if model is not None and not (isinstance(model, str) and 0 < len(model) <= 200):
        raise TokenError(f"{what}: source model must be a model name, got {model!r}")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int) or not 0 < rate <= MAX_SAMPLE_RATE
    ):
        raise TokenError(f"{what}: source sample_rate must be an integer in Hz, got {rate!r}")
    sha = src.get("weights_sha256")
    source = {
        "model": model,
        "weights_sha256": sha if isinstance(sha, str) else None,
        "sample_rate": rate,
        "channels": src.get("channels") if isinstance(src.get("channels"), int) else None,
        "bandwidth": src.get("bandwidth") if isinstance(src.get("bandwidth"), (int, float)) else None,
        "family": None,  # EnCodec (files before families have none)
        "family_codes": None,
    }
    family, fmeta = src.get("family"), src.get("family_codes")
    if family is not None:  # checked in full when a family codes file is rebuilt (rvqkit.family_codes)
        if family not in ("mimi", "dac") or not isinstance(fmeta, dict):
            raise TokenError(
                f"{what}: source family must be 'mimi' or 'dac' with its codes facts, got {family!r}"
            )
        source["family"], source["family_codes"] = family, fmeta
    return layout, source


def _limit(max_samples: int | None, source: dict[str, Any]) -> int:
    if max_samples is not None:
        return int(max_samples)
    return MAX_FILE_SECONDS * (source["sample_rate"] or DEFAULT_SAMPLE_RATE)


def _max_ids(limit: int, batch: int, layout: TokenLayout) -> int:
    """Most ids (padding included) a file of cost ``limit`` samples may hold: one code value per
    :data:`SAMPLES_PER_CODE` samples, plus each item's specials and delay steps."""
    return limit // SAMPLES_PER_CODE + batch * layout.n_q * (layout.n_q + 4) + 4096


def _check_facts(
    what: str,
    batch: int,
    lengths: np.ndarray | None,
    frame_lengths: np.ndarray | None,
    scales: np.ndarray | None,
    limit: int,
) -> None:
    for name, a in (("lengths", lengths), ("frame_lengths", frame_lengths)):
        if a is None:
            continue
        if a.shape != (batch,):
            raise TokenError(f"{what}: {name} has shape {a.shape}, expected ({batch},)")
        if batch and a.min() < (1 if name == "lengths" else 0):
            raise TokenError(f"{what}: {name} must be positive integers")
    if lengths is not None and batch and batch * int(lengths.max()) > limit:
        raise TokenError(
            f"{what}: declares {batch} x {int(lengths.max())} samples, more than the {limit} allowed"
        )
    if scales is not None:
        if scales.ndim != 2 or scales.shape[0] != batch:
            raise TokenError(f"{what}: scales has shape {scales.shape}, expected ({batch}, segments)")
        if not np.isfinite(scales).all() or (scales < 0).any():
            raise TokenError(f"{what}: scales must be finite and not negative")


def _ids_shape_ok(layout: TokenLayout, shape: tuple[int, ...]) -> bool:
    if layout.multi_stream:
        return len(shape) == 3 and shape[1] == layout.n_q
    return len(shape) == 2


def _tensors(
    layout: TokenLayout,
    ids: np.ndarray,
    mask: np.ndarray,
    source: dict[str, Any],
    lengths: np.ndarray | None,
    frame_lengths: np.ndarray | None,
    scales: np.ndarray | None,
) -> TokenFile:
    return TokenFile(
        layout,
        torch.from_numpy(ids.astype(np.int64)),
        torch.from_numpy(mask.astype(bool)),
        source,
        None if lengths is None else torch.from_numpy(lengths.astype(np.int64)),
        None if frame_lengths is None else torch.from_numpy(frame_lengths.astype(np.int64)),
        None if scales is None else torch.from_numpy(scales.astype(np.float32)),
    )


# -- .npz --------------------------------------------------------------------------------------------------
def _read_npz(p: Path, max_samples: int | None) -> TokenFile:
    what = str(p)
    with NpzReader(
        p,
        what,
        required=("ids", "attention_mask", "meta"),
        optional=("lengths", "frame_lengths", "scales"),
        kinds={
            "ids": INTEGER,
            "attention_mask": BOOL,
            "meta": ("u",),
            "lengths": INTEGER,
            "frame_lengths": INTEGER,
            "scales": FLOAT,
        },
        error=TokenError,
    ) as z:
        m = z.members
        z.check_sizes({"meta": MAX_META, "lengths": MAX_ITEMS, "frame_lengths": MAX_ITEMS})
        meta = z.read_json("meta", "meta is not JSON")
        layout, source = _check_meta(meta, what)
        shape = m["ids"].shape
        if not _ids_shape_ok(layout, shape):
            want = "[batch, n_q, steps]" if layout.multi_stream else "[batch, length]"
            raise z.fail(f"{layout.layout} token ids must be {want} with n_q={layout.n_q}, got {shape}")
        batch = shape[0]
        if not 1 <= batch <= MAX_ITEMS:
            raise z.fail(f"{batch} items; 1 to {MAX_ITEMS} expected")
        if m["attention_mask"].shape != (batch, shape[-1]):
            raise z.fail(
                f"attention_mask has shape {m['attention_mask'].shape}, expected {(batch, shape[-1])}"
            )
        limit = _limit(max_samples, source)
        lengths = z.read("lengths") if "lengths" in m else None
        frame_lengths = z.read("frame_lengths") if "frame_lengths" in m else None
        _check_facts(what, batch, lengths, frame_lengths, None, limit)
        z.check_sizes(
            {
                "ids": _max_ids(limit, batch, layout),
                "attention_mask": _max_ids(limit, batch, layout),
                "scales": batch * max(shape[-1], 1),  # a segment holds at least one frame
            }
        )
        ids = z.read("ids")
        mask = z.read("attention_mask")
        scales = z.read("scales") if "scales" in m else None
    _check_facts(what, batch, None, None, scales, limit)
    return _tensors(layout, ids, mask, source, lengths, frame_lengths, scales)


# -- .json -------------------------------------------------------------------------------------------------
def _int_array(value: object, what: str, name: str) -> np.ndarray:
    """A JSON list of integers (nested lists of one length) as an int64 array; floats, bools, strings
    and ragged lists are refused."""
    rows = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
    for row in rows:  # numpy would take true/false as 1/0: every leaf must be a JSON integer
        if not isinstance(row, list) or any(type(v) is not int for v in row):
            raise TokenError(f"{what}: {name} must be (lists of) integers")
    try:
        a = np.asarray(value)
    except (ValueError, OverflowError) as e:
        raise TokenError(f"{what}: {name} must be (lists of) integers ({e})") from e
    if a.dtype.kind != "i" and not (a.size == 0 and a.dtype.kind == "f"):
        raise TokenError(f"{what}: {name} must be (lists of) integers, got {a.dtype} values")
    return a.astype(np.int64)


def _read_json(p: Path, max_samples: int | None) -> TokenFile:
    what = str(p)
    try:
        size = p.stat().st_size
        if size > MAX_JSON_BYTES:
            raise TokenError(
                f"{what}: {size} bytes; JSON token files are limited to {MAX_JSON_BYTES >> 20} MiB (use .npz)"
            )
        meta = json.loads(p.read_bytes().decode())
    except FileNotFoundError as e:
        raise TokenError(f"{what}: no such token file") from e
    except TokenError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise TokenError(f"{what}: not a readable token file ({type(e).__name__}: {e})") from e
    layout, source = _check_meta(meta, what)
    items = meta.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise TokenError(f"{what}: items must be a list of 1 to {MAX_ITEMS} token lists")
    arrays = [_int_array(it, what, f"items[{i}]") for i, it in enumerate(items)]
    for i, a in enumerate(arrays):
        if not _ids_shape_ok(layout, (1, *a.shape)):
            want = "[n_q, steps]" if layout.multi_stream else "[length]"
            raise TokenError(f"{what}: items[{i}] must be {want} with n_q={layout.n_q}, got {a.shape}")
    facts: dict[str, np.ndarray | None] = {}
    for name in ("lengths", "frame_lengths"):
        facts[name] = None if meta.get(name) is None else _int_array(meta[name], what, name)
    scales = None
    if meta.get("scales") is not None:
        try:
            scales = np.asarray(meta["scales"], dtype=np.float64)
        except (ValueError, TypeError) as e:
            raise TokenError(f"{what}: scales must be lists of numbers ({e})") from e
    limit = _limit(max_samples, source)
    _check_facts(what, len(arrays), facts["lengths"], facts["frame_lengths"], scales, limit)
    longest = max(a.shape[-1] for a in arrays)
    if len(arrays) * longest * (layout.n_q if layout.multi_stream else 1) > _max_ids(
        limit, len(arrays), layout
    ):
        raise TokenError(f"{what}: {len(arrays)} items of up to {longest} steps exceed the cost allowed")
    if any(a.size and (a.min() < 0 or a.max() >= 2**62) for a in arrays):
        raise TokenError(f"{what}: token ids must be non-negative")
    batch = layout.pad_items([torch.from_numpy(a) for a in arrays])
    return _tensors(
        layout,
        batch.ids.numpy(),
        batch.attention_mask.numpy(),
        source,
        facts["lengths"],
        facts["frame_lengths"],
        scales,
    )


__all__ = [
    "FORMAT",
    "MAX_JSON_BYTES",
    "VERSION",
    "TokenFile",
    "file_meta",
    "ids_text",
    "load_tokens",
    "read_tokens",
    "save_tokens",
    "source_meta",
]
