"""The output folder of a corpus job: Parquet shards, their resume records, ``errors.jsonl`` and
``manifest.json``.

Layout::

    OUT_DIR/manifest.json                      job settings (model, weights sha256, bandwidth ...), counts
    OUT_DIR/data/shard-00000-of-00012.parquet  one row per encoded item, in source order
    OUT_DIR/records/shard-00000.json           which inputs shard 0 holds, its rows and errors
    OUT_DIR/records/inputs.parquet             the job's inputs as listed when it started (files' stats)
    OUT_DIR/errors.jsonl                       every item without a row, and why
    OUT_DIR/.lock                              held by the running job (see :mod:`.lock`)

Shard 0 holds the first ``first_shard_size`` items of the source order (small, so that a job killed
early keeps some work) and every later shard ``shard_size`` items (:class:`ShardLayout`), so a re-run
knows from the records which shards are finished. A shard's Parquet file is written to a
temporary name and renamed into place, then its record is written the same way; a shard counts as
done only when its record exists and its Parquet footer holds the recorded number of rows. A job
killed at any moment therefore leaves whole shards or nothing, and re-running finishes the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import TMP_MARK, write_atomic
from .items import CorpusError, Item, ItemCodes, Result, code_frames
from .lock import LOCK_NAME

if TYPE_CHECKING:
    from .job import CorpusJob

FORMAT = "rvqkit-corpus"
FORMAT_VERSION = 1
DATA_DIR = "data"
RECORD_DIR = "records"
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
INPUTS = "inputs.parquet"  # in RECORD_DIR


@dataclass(frozen=True)
class ShardLayout:
    """Which items each shard holds: shard 0 the first ``first`` items, then ``size`` items each (the
    last one fewer). ``first`` is at most ``size``; equal, every shard has ``size`` items."""

    num_items: int
    size: int
    first: int

    @property
    def num_shards(self) -> int:
        if self.num_items <= self.first:
            return 1 if self.num_items else 0
        return 1 + (self.num_items - self.first + self.size - 1) // self.size

    def start(self, k: int) -> int:
        return 0 if k == 0 else self.first + (k - 1) * self.size

    def bounds(self, k: int) -> tuple[int, int]:
        """``[start, end)`` item indices of shard ``k``."""
        end = self.first if k == 0 else self.start(k) + self.size
        return self.start(k), min(end, self.num_items)

    def shard_of(self, index: int) -> int:
        return 0 if index < self.first else 1 + (index - self.first) // self.size


def shard_name(k: int, num_shards: int) -> str:
    return f"shard-{k:05d}-of-{num_shards:05d}.parquet"


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8"))


# -- Parquet schema and tables -----------------------------------------------------------------------------
CODES_TYPE = pa.list_(pa.list_(pa.int16()))  # [n_q][frames]


def schema(
    has_scales: bool,
    extra_columns: Sequence[str] = (),
    token_fields: Sequence[pa.Field] = (),
    codes: bool = True,
) -> pa.Schema:
    """Columns of a shard. ``codes`` is ``list<list<int16>>`` indexed ``[codebook][frame]`` (left out
    when ``codes`` is False and token columns are written instead)."""
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("index", pa.int64(), nullable=False),
        pa.field("sample_rate", pa.int32()),  # original, Hz
        pa.field("channels", pa.int32()),  # original
        pa.field("num_samples", pa.int64()),  # original, samples
        pa.field("duration", pa.float64()),  # seconds
        pa.field("model_samples", pa.int64()),  # samples at the model's rate: what the codes decode to
        pa.field("num_frames", pa.int32()),  # code frames
    ]
    if codes:
        fields.append(pa.field("codes", CODES_TYPE))
    if has_scales:
        fields.append(pa.field("scales", pa.list_(pa.float32())))  # per 1 s segment (48 kHz model)
    fields += [pa.field(c, pa.string()) for c in extra_columns]
    fields += list(token_fields)
    return pa.schema(fields)


def _codes_array(codes: Sequence[ItemCodes]) -> pa.Array:
    """``list<list<int16>>`` from int16 ``[n_q, frames]`` arrays (or SNAC's lists of per-level
    ``[frames_i]`` arrays: ``[level][frames_i]``) without a Python loop over frames."""
    parts = [_Levels.of(c) for c in codes]
    n_q = np.array([len(p.lengths) for p in parts], dtype=np.int32)
    # [[]]: no items gives an empty array (the stub wants arrays only)
    frames = np.concatenate([p.lengths for p in parts] or [[]])  # type: ignore[list-item]
    inner_off = np.concatenate([[0], np.cumsum(frames)]).astype(np.int32)
    outer_off = np.concatenate([[0], np.cumsum(n_q)]).astype(np.int32)
    values = pa.array(
        np.concatenate([p.values for p in parts]) if parts else np.zeros(0, np.int16), pa.int16()
    )
    inner = pa.ListArray.from_arrays(pa.array(inner_off), values)
    return pa.ListArray.from_arrays(pa.array(outer_off), inner)


@dataclass(frozen=True)
class _Levels:
    """One item's codes as one flat int16 array and the length of each of its lists (codebooks, or
    SNAC's levels)."""

    values: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, codes: ItemCodes) -> _Levels:
        if isinstance(codes, np.ndarray):  # [n_q, frames]
            return cls(codes.reshape(-1), np.full(codes.shape[0], codes.shape[1], dtype=np.int32))
        flat = [np.asarray(v, dtype=np.int16).reshape(-1) for v in codes]
        values = np.concatenate(flat) if flat else np.zeros(0, np.int16)
        return cls(values, np.array([len(v) for v in flat], dtype=np.int32))


def build_table(items: Sequence[Item], results: Sequence[Result], sch: pa.Schema) -> pa.Table:
    """One row per successful result, in the order given."""
    cols: dict[str, Any] = {
        "id": [it.id for it in items],
        "path": [it.path for it in items],
        "index": [it.index for it in items],
        "sample_rate": [r.sample_rate for r in results],
        "channels": [r.channels for r in results],
        "num_samples": [r.num_samples for r in results],
        "duration": [r.duration for r in results],
        "model_samples": [r.model_samples for r in results],
        "num_frames": [0 if r.codes is None else code_frames(r.codes) for r in results],  # all ok: codes set
    }
    arrays = [pa.array(cols[f.name], f.type) for f in sch if f.name in cols]
    names = [f.name for f in sch if f.name in cols]
    if "codes" in sch.names:
        arrays.append(_codes_array([r.codes for r in results]))  # type: ignore[misc]  # all ok: codes set
        names.append("codes")
    if "scales" in sch.names:
        arrays.append(pa.array([r.scales.tolist() for r in results], pa.list_(pa.float32())))  # type: ignore[union-attr]  # 48 kHz: set
        names.append("scales")
    for f in sch:
        if f.name in names:
            continue
        if f.type == pa.string():  # carried columns
            arrays.append(pa.array([dict(it.extra).get(f.name) for it in items], pa.string()))
        else:  # token sequences
            arrays.append(pa.array([r.tokens[f.name].tolist() for r in results], f.type))
        names.append(f.name)
    table = pa.Table.from_arrays(arrays, names=names)
    return table.select(sch.names).cast(sch)


# -- the output folder ------------------------------------------------------------------------------------
class OutputDir:
    """The files of one job in ``root``; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.data = self.root / DATA_DIR
        self.records = self.root / RECORD_DIR

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.is_file():
            return None
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CorpusError(f"{self.manifest_path}: unreadable ({e})") from e

    def prepare(self, job: CorpusJob, overwrite: bool) -> None:
        """Create the folder for ``job`` or check that it holds the same job (to resume it).

        An existing folder of another job, or a non-empty folder that is not a corpus output, is an
        error unless ``overwrite`` (which removes only this job's kind of files)."""
        old = self.read_manifest()
        if old is not None and not overwrite:
            if old.get("format") != FORMAT:
                raise CorpusError(f"{self.manifest_path} is not an rvqkit corpus manifest")
            reason = job.matches(old)
            if reason is not None:
                raise CorpusError(
                    f"{self.root} holds {reason}; use another output folder, or overwrite=True to replace it"
                )
        else:
            self.check_usable(overwrite)
        if overwrite:
            self.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        if old is None or overwrite:  # first, so that a folder with our sub-folders always has a manifest
            write_json_atomic(self.manifest_path, {**job.to_manifest(), "status": "running"})
        self.data.mkdir(exist_ok=True)
        self.records.mkdir(exist_ok=True)
        self.remove_temp_files()

    def check_usable(self, overwrite: bool) -> None:
        """Refuse a non-empty folder that holds no corpus job (unless ``overwrite``), before anything
        is written in it."""
        if self.root.exists() and not self.root.is_dir():
            raise CorpusError(f"{self.root} is a file, not a folder; give a folder for the output")
        if overwrite or self.read_manifest() is not None or not self.root.is_dir():
            return
        if any(p.name != LOCK_NAME for p in self.root.iterdir()):
            raise CorpusError(f"{self.root} exists and is not empty; pass overwrite=True to replace it")

    def clear(self) -> None:
        """Remove the files a corpus job writes (nothing else)."""
        for folder, pattern in (
            (self.data, "shard-*.parquet*"),
            (self.records, "shard-*.json*"),
            (self.records, f"{INPUTS}*"),
        ):
            if folder.is_dir():
                for p in folder.glob(pattern):
                    p.unlink()
        for name in (MANIFEST, ERRORS):
            for p in self.root.glob(f"{name}*"):
                p.unlink()

    def remove_temp_files(self) -> None:
        """Temporary files left by a killed run."""
        for folder in (self.root, self.data, self.records):
            for p in folder.glob(f"*{TMP_MARK}*"):
                p.unlink()

    # -- the job's inputs as listed at its start ---------------------------------------------------------
    @property
    def inputs_path(self) -> Path:
        return self.records / INPUTS

    def write_inputs(self, items: Sequence[Item]) -> None:
        """Record the items (id, path, stat, listing error) so that a re-run sees the same inputs even
        when files have vanished or changed since."""
        table = pa.table(
            {
                "index": pa.array([it.index for it in items], pa.int64()),
                "id": pa.array([it.id for it in items], pa.string()),
                "path": pa.array([it.path for it in items], pa.string()),
                "size": pa.array([it.stat[0] if it.stat else None for it in items], pa.int64()),
                "mtime_ns": pa.array([it.stat[1] if it.stat else None for it in items], pa.int64()),
                "error_reason": pa.array([it.error[0] if it.error else None for it in items], pa.string()),
                "error_message": pa.array([it.error[1] if it.error else None for it in items], pa.string()),
            }
        )
        write_atomic(self.inputs_path, lambda p: pq.write_table(table, p, compression="zstd"))

    def read_inputs(self) -> list[Item] | None:
        """The recorded items (without carried columns), or None when there is no readable record."""
        if not self.inputs_path.is_file():
            return None
        try:
            rows = pq.read_table(self.inputs_path).to_pydict()
        except (OSError, pa.ArrowException):
            return None
        out = []
        for i in range(len(rows["index"])):
            size, mtime = rows["size"][i], rows["mtime_ns"][i]
            reason = rows["error_reason"][i]
            out.append(
                Item(
                    rows["index"][i],
                    rows["id"][i],
                    rows["path"][i],
                    stat=None if size is None else (size, mtime),
                    error=None if reason is None else (reason, rows["error_message"][i] or ""),
                )
            )
        return out

    def record_path(self, k: int) -> Path:
        return self.records / f"shard-{k:05d}.json"

    def read_record(self, k: int) -> dict[str, Any] | None:
        """Shard ``k``'s record if the shard is complete (record present, Parquet rows as recorded)."""
        path = self.record_path(k)
        if not path.is_file():
            return None
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            if rec["rows"] and pq.read_metadata(self.root / rec["file"]).num_rows != rec["rows"]:
                return None
        except (OSError, ValueError, KeyError, pa.ArrowException):
            return None
        return rec

    def write_shard(
        self,
        k: int,
        num_shards: int,
        items: Sequence[Item],
        results: Sequence[Result],
        sch: pa.Schema,
    ) -> dict[str, Any]:
        """Write shard ``k`` (rows of the successful results) and then its record; returns the record."""
        ok = [(it, r) for it, r in zip(items, results, strict=True) if r.ok]
        file = f"{DATA_DIR}/{shard_name(k, num_shards)}"
        if ok:
            table = build_table([it for it, _ in ok], [r for _, r in ok], sch)
            write_atomic(self.root / file, lambda p: pq.write_table(table, p, compression="zstd"))
        errors = [
            {"id": it.id, "path": it.path, "index": it.index, "reason": r.reason, "message": r.message}
            for it, r in zip(items, results, strict=True)
            if not r.ok
        ]
        rec: dict[str, Any] = {
            "shard": k,
            "file": file if ok else None,
            "inputs": [it.id for it in items],
            "first_index": items[0].index,
            "rows": len(ok),
            "errors": errors,
            "audio_seconds": sum(r.duration for _, r in ok),
            "frames": sum(code_frames(r.codes) for _, r in ok if r.codes is not None),
        }
        write_json_atomic(self.record_path(k), rec)
        return rec

    def finish(self, job: CorpusJob, records: Sequence[dict[str, Any]], wall_seconds: float) -> dict:
        """Write ``errors.jsonl`` and the final ``manifest.json`` from all shard records."""
        errors = [e for rec in records for e in rec["errors"]]
        lines = "".join(json.dumps(e) + "\n" for e in errors)
        write_atomic(self.root / ERRORS, lambda p: p.write_text(lines, encoding="utf-8"))
        by_reason: dict[str, int] = {}
        for e in errors:
            by_reason[e["reason"]] = by_reason.get(e["reason"], 0) + 1
        counts = {
            "items": sum(len(rec["inputs"]) for rec in records),
            "rows": sum(rec["rows"] for rec in records),
            "errors": len(errors),
            "errors_by_reason": by_reason,
            "shards": len(records),
            "shards_with_rows": sum(1 for rec in records if rec["file"]),
            "audio_seconds": sum(rec["audio_seconds"] for rec in records),
            "frames": sum(rec["frames"] for rec in records),
        }
        manifest = {
            **job.to_manifest(),
            "status": "complete",
            "counts": counts,
            "files": [rec["file"] for rec in records if rec["file"]],
            "last_run_seconds": wall_seconds,
        }
        write_json_atomic(self.manifest_path, manifest)
        return manifest
