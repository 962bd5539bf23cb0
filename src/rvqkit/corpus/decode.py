"""Turn rows of a corpus output back into audio files, for spot-listening."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
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
from .models import CorpusModel, family_name, family_weights_sha256, load_model
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
            raise CorpusError(f"{root / MANIFEST}: unreadable ({e})") from e
    return files, manifest


def audio_name(item_id: str) -> Path:
    """A safe relative file path for an id: ``/`` keeps sub-folders, other odd characters become ``_``."""
    parts = [_UNSAFE.sub("_", p) for p in item_id.split("/")]
    parts = [p for p in parts if p not in ("", ".", "..")] or ["item"]
    return Path(*parts).with_name(parts[-1] + ".wav")


def _open_shard(f: Path) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(f)
    except (OSError, pa.ArrowException) as e:
        raise CorpusError(f"{f}: not a readable Parquet shard ({e})") from e
    names = pf.schema_arrow.names
    has_codes = "codes" in names or any(c.startswith("tokens_") for c in names)
    if "id" not in names or not has_codes:
        raise CorpusError(f"{f}: not an rvqkit corpus shard (no id and codes or tokens columns)")
    return pf


def iter_rows(
    files: Sequence[Path], ids: Sequence[str] | None = None, batch_rows: int = 64
) -> Iterator[dict]:
    """Rows of the shards in order (those with the given ids), read in batches of ``batch_rows``: the
    memory held is one batch, whatever the size of the corpus."""
    wanted = None if ids is None else pa.array(list(ids), pa.string())
    for f in files:
        pf = _open_shard(f)
        for batch in pf.iter_batches(batch_size=batch_rows):
            if wanted is not None:
                batch = batch.filter(pc.is_in(batch.column("id"), value_set=wanted))
            yield from batch.to_pylist()


def read_ids(files: Sequence[Path]) -> list[str]:
    """Every id of the shards (the id column only)."""
    return [i for f in files for i in _open_shard(f).read(columns=["id"])["id"].to_pylist()]


def decode_corpus(
    source: str | os.PathLike[str],
    out_folder: str | os.PathLike[str],
    model: str | os.PathLike[str] | CorpusModel | None = None,
    *,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    n_q: int | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    skipped: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Decode rows to WAV files at the model's rate in ``out_folder``, named by id; returns the written
    paths.

    ``ids`` chooses rows (all must exist; an existing output file among them is an error unless
    ``overwrite``). Without ``ids``, rows are taken in order and existing output files are skipped
    (``skipped`` is called with each), so ``limit`` counts files written: repeated calls with
    ``limit=10`` decode the next ten. The model defaults to the one in ``manifest.json``; weights whose
    sha256 differs from the manifest's are refused, and so is a model of another family. Rows are read
    in batches (bounded memory).

    Mimi, DAC and SNAC outputs decode with ``FamilyCodec.decode(codes, length=model_samples)``: exactly
    the item's length at the model's rate. ``n_q``: the first ``n_q`` codebooks (SNAC: levels)."""
    if limit is not None and limit < 0:
        raise CorpusError(f"limit must be 0 or more, got {limit}")
    files, manifest = locate(source)
    out_dir = Path(out_folder)
    if ids is not None:  # check everything before the model loads and any file is written
        missing = sorted(set(ids) - set(read_ids(files)))
        if missing:
            raise CorpusError(f"no rows with id {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        exists = [out_dir / audio_name(i) for i in ids if (out_dir / audio_name(i)).exists()]
        if exists and not overwrite:
            raise CorpusError(f"{exists[0]} exists; pass overwrite=True to replace it")

    def load() -> CorpusModel:  # only once a row is to be decoded: skipping needs no model
        nonlocal model
        if model is None:
            if manifest is None:
                raise CorpusError("no manifest.json next to the shard: give the model (model=...)")
            model = manifest["model_source"]
        codec = load_model(model, device)
        if manifest is not None:
            made = manifest.get("family", "encodec")
            if family_name(codec) != made:
                raise CorpusError(
                    f"the codes were made with a {made} model; the given model is {family_name(codec)} "
                    "(model=...)"
                )
            want = manifest["model"].get("weights_sha256")
            have = codec.weights_sha256 if isinstance(codec, Codec) else family_weights_sha256(codec)
            if want and have and want != have:
                raise CorpusError(
                    f"the codes were made with weights sha256 {want[:12]}..., the given model is "
                    f"{have[:12]}...; give the same weights (model=...)"
                )
        return codec

    codec: CorpusModel | None = None
    to_codes: Any = None
    written: list[Path] = []
    for row in iter_rows(files, ids):
        if limit is not None and len(written) >= limit:
            break
        target = out_dir / audio_name(row["id"])
        if target.exists() and not overwrite:
            if skipped is not None:
                skipped(target)
            continue
        if codec is None:
            codec, to_codes = load(), _codes_reader(row, manifest)
        if not isinstance(codec, Codec):
            audio = _decode_family(codec, to_codes(row), row, n_q)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_audio(target, audio, codec.sample_rate, overwrite=overwrite)
            written.append(target)
            continue
        encoded = codec.wrap_codes(
            to_codes(row),
            torch.tensor([row["scales"]], dtype=torch.float32) if row.get("scales") is not None else None,
            [row["model_samples"]],
            [row["num_frames"]],
            encoded_here=False,
        )
        audio = codec.decode(encoded, n_q=n_q)[0].cpu().numpy()
        target.parent.mkdir(parents=True, exist_ok=True)
        write_audio(target, audio, codec.sample_rate, overwrite=overwrite)
        written.append(target)
    return written


def _decode_family(codec: Any, codes: Any, row: dict[str, Any], n_q: int | None) -> np.ndarray:
    """A Mimi, DAC or SNAC row's audio ``[channels, model_samples]`` (``FamilyCodec.decode``)."""
    if codec.family == "snac":  # the codes column: [level][frames_level], coarsest first
        codes = [torch.tensor(np.asarray(level, dtype=np.int64)) for level in row["codes"]]
        have = len(codes)
    else:
        codes = codes[0]  # [n_q, frames]
        have = int(codes.shape[0])
    if n_q is not None:
        if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= have:
            what = "levels" if codec.family == "snac" else "codebooks"
            raise CorpusError(f"n_q must be between 1 and {have} (the rows' {what}), got {n_q!r}")
        codes = codes[:n_q]
    return codec.decode(codes, length=int(row["model_samples"])).numpy()


def _codes_reader(row: dict[str, Any], manifest: dict[str, Any] | None):
    """``row -> codes [1, n_q, frames]``: the codes column, else the first token column (decoded with
    the layout settings in the manifest). (SNAC's ragged levels are read by :func:`_decode_family`.)"""
    if "codes" in row:
        if (manifest or {}).get("family") == "snac":
            return lambda row: None
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
