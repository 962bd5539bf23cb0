"""Turn rows of a corpus output back into audio files, for spot-listening."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from ..audio import write_audio
from ..codec import Codec
from .items import CorpusError
from .shards import DATA_DIR, MANIFEST

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def locate(source: str | os.PathLike[str]) -> tuple[list[Path], dict[str, Any] | None]:
    """The shard files and the manifest (if found) of an output folder or a single shard file."""
    path = Path(source)
    if path.is_dir():
        files = sorted((path / DATA_DIR).glob("shard-*.parquet"))
        root = path
        if not files:
            raise CorpusError(f"{path}: no shards in {DATA_DIR}/ (not a corpus output folder?)")
    elif path.is_file() and path.suffix == ".parquet":
        files, root = [path], path.parent.parent
    else:
        raise CorpusError(f"{path}: give a corpus output folder or one of its .parquet shards")
    manifest = None
    if (root / MANIFEST).is_file():
        try:
            manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CorpusError(f"{root / MANIFEST}: unreadable ({e})") from None
    return files, manifest


def audio_name(item_id: str) -> Path:
    """A safe relative file path for an id: ``/`` keeps sub-folders, other odd characters become ``_``."""
    parts = [_UNSAFE.sub("_", p) for p in item_id.split("/")]
    parts = [p for p in parts if p not in ("", ".", "..")] or ["item"]
    return Path(*parts).with_name(parts[-1] + ".wav")


def read_rows(files: Sequence[Path], ids: Sequence[str] | None = None, limit: int | None = None) -> pa.Table:
    """Rows of the shards (those with the given ids, or the first ``limit``)."""
    tables = []
    wanted = None if ids is None else pa.array(list(ids), pa.string())
    for f in files:
        try:
            t = pq.read_table(f)
        except (OSError, pa.ArrowException) as e:
            raise CorpusError(f"{f}: not a readable Parquet shard ({e})") from None
        has_codes = "codes" in t.column_names or any(c.startswith("tokens_") for c in t.column_names)
        if "id" not in t.column_names or not has_codes:
            raise CorpusError(f"{f}: not an rvqkit corpus shard (no id and codes or tokens columns)")
        if wanted is not None:
            t = t.filter(pc.is_in(t["id"], value_set=wanted))
        tables.append(t)
        if limit is not None and sum(x.num_rows for x in tables) >= limit:
            break
    table = pa.concat_tables(tables, promote_options="default")
    if ids is not None:
        missing = sorted(set(ids) - set(table["id"].to_pylist()))
        if missing:
            raise CorpusError(f"no rows with id {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return table.slice(0, limit) if limit is not None else table


def decode_corpus(
    source: str | os.PathLike[str],
    out_folder: str | os.PathLike[str],
    model: str | os.PathLike[str] | Codec | None = None,
    *,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    n_q: int | None = None,
    device: str = "cpu",
    overwrite: bool = False,
) -> list[Path]:
    """Decode rows (chosen ``ids``, or the first ``limit``, or all) to WAV files at the model's rate in
    ``out_folder``, named by id. The model defaults to the one in ``manifest.json``; weights whose
    sha256 differs from the manifest's are refused. Returns the written paths."""
    files, manifest = locate(source)
    if model is None:
        if manifest is None:
            raise CorpusError("no manifest.json next to the shard: give the model with --model")
        model = manifest["model_source"]
    codec = model if isinstance(model, Codec) else Codec.from_pretrained(model, device=device)
    if manifest is not None:
        want = manifest["model"].get("weights_sha256")
        if want and codec.weights_sha256 and want != codec.weights_sha256:
            raise CorpusError(
                f"the codes were made with weights sha256 {want[:12]}..., the given model is "
                f"{codec.weights_sha256[:12]}...; give the same weights with --model"
            )
    table = read_rows(files, ids, limit)
    out_dir = Path(out_folder)
    targets = [out_dir / audio_name(i) for i in table["id"].to_pylist()]
    if not overwrite:
        exists = [t for t in targets if t.exists()]
        if exists:
            raise CorpusError(f"{exists[0]} exists; pass --overwrite to replace it")
    written = []
    has_scales = "scales" in table.column_names
    to_codes = _codes_reader(table, manifest)
    for row, target in zip(table.to_pylist(), targets, strict=True):
        codes = to_codes(row)
        encoded = codec.wrap_codes(
            codes,
            torch.tensor([row["scales"]], dtype=torch.float32) if has_scales else None,
            [row["model_samples"]],
            [row["num_frames"]],
            encoded_here=False,
        )
        audio = codec.decode(encoded, n_q=n_q)[0].cpu().numpy()
        target.parent.mkdir(parents=True, exist_ok=True)
        write_audio(target, audio, codec.sample_rate, overwrite=overwrite)
        written.append(target)
    return written


def _codes_reader(table: pa.Table, manifest: dict[str, Any] | None):
    """``row -> codes [1, n_q, frames]``: the codes column, else the first token column (decoded with
    the layout settings in the manifest)."""
    if "codes" in table.column_names:
        return lambda row: torch.tensor(np.asarray(row["codes"], dtype=np.int64))[None]
    from ..tokens import TokenLayout

    specs = (manifest or {}).get("tokens") or []
    if not specs:
        raise CorpusError(
            "the shards hold only tokens; their layout settings are in manifest.json, not found"
        )
    column = specs[0]["column"]
    layout = TokenLayout.from_settings(specs[0]["settings"])

    def read(row: dict[str, Any]) -> torch.Tensor:
        codes, frames = layout.decode(torch.tensor(np.asarray(row[column], dtype=np.int64))[None])
        return codes[:, :, : int(frames[0])]

    return read
