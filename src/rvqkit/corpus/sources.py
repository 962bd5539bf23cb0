"""List the items of a corpus source in a deterministic order.

A source is one of:

- a folder of audio files, searched recursively (``.wav .flac .ogg .mp3``, any case), in sorted path
  order; ids are the paths relative to the folder without the suffix (with it where two files would
  share an id);
- a manifest, ``.csv`` or ``.jsonl``, with a ``path`` column (relative paths are relative to the
  manifest's folder) and optional ``id``, ``text`` and ``speaker`` columns, in file order;
- a Hugging Face ``datasets`` dataset with an ``Audio`` column: a ``save_to_disk`` folder, a
  ``.parquet`` file or a folder of them, or a hub name (``org/name``, loaded with
  ``datasets.load_dataset``), in row order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import stat_file
from .items import EXTRA_COLUMNS, CorpusError, Item

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass
class Source:
    """The items of a source and how to get each item's audio.

    ``payload(item)`` is what a worker decodes: a file path (str) or the encoded audio file (bytes).
    """

    kind: str  # "folder", "manifest" or "dataset"
    location: str
    items: list[Item]
    extra_columns: tuple[str, ...] = ()
    dataset: Any = field(default=None, repr=False)  # datasets.Dataset with the audio column undecoded
    audio_column: str | None = None

    def payload(self, item: Item) -> str | bytes:
        if self.dataset is None:
            return item.path
        value = self.dataset[item.index][self.audio_column]
        if value is None:
            return b""
        if value.get("bytes"):
            return bytes(value["bytes"])
        return str(value.get("path") or "")

    def fingerprint(self) -> str:
        """sha256 of the ordered (id, path) list: a re-run must see the same inputs to resume."""
        h = hashlib.sha256()
        for it in self.items:
            h.update(json.dumps([it.id, it.path]).encode())
            h.update(b"\n")
        return h.hexdigest()


def open_source(
    source: str | os.PathLike[str], audio_column: str | None = None, split: str | None = None
) -> Source:
    """Detect the kind of ``source`` and list its items (see the module docstring)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        path = path.resolve()  # absolute paths: the same job whatever the working directory
        text = str(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in MANIFEST_SUFFIXES:
            return _manifest_source(path)
        if suffix == ".parquet":
            return _dataset_source(_load_parquet([path], split), text, audio_column)
        raise CorpusError(
            f"{path}: not a corpus source (give a folder of audio, a .csv/.jsonl manifest, "
            "a .parquet file or a datasets folder)"
        )
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return _dataset_source(_load_from_disk(path, split), text, audio_column)
        audio = _audio_files(path)
        parquet = sorted(path.rglob("*.parquet"))
        if parquet and not audio:
            return _dataset_source(_load_parquet(parquet, split), text, audio_column)
        return _folder_source(path, audio)
    if "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1:
        return _dataset_source(_load_hub(text, split), text, audio_column)
    raise CorpusError(f"{text}: no such file or folder, and not a Hugging Face dataset name")


# -- folders -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One thing found below a source folder: an audio file, or something that cannot be used."""

    path: Path
    rel: str  # relative posix path; "sub/" for a folder
    stat: tuple[int, int] | None = None
    error: tuple[str, str] | None = None


def _audio_files(folder: Path) -> list[Entry]:
    """Every ``.wav .flac .ogg .mp3`` below ``folder`` (any case; folders are searched, symbolic links to
    folders are not followed, as ``Path.rglob``), sorted by relative path, each with its stat; plus an
    entry with an error for each audio-named thing that is not a regular file (FIFO, device, dangling
    link) and each folder that cannot be listed. Nothing is opened: ``os.scandir`` and ``os.stat``
    only (``rglob`` + ``is_file`` would drop such entries silently)."""
    entries: list[Entry] = []
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                found = list(it)
        except OSError as e:
            if d == folder:
                raise CorpusError(f"{folder}: cannot list the folder ({e.strerror or e})") from e
            rel = d.relative_to(folder).as_posix() + "/"
            entries.append(Entry(d, rel, error=("unreadable_folder", f"cannot list it ({e.strerror or e})")))
            continue
        for entry in found:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(path)
                continue
            if path.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            stat, error = stat_file(entry.path)
            if error is not None and error[1].startswith("a folder"):
                continue  # a symbolic link to a folder with an audio suffix: not followed, as rglob
            entries.append(Entry(path, path.relative_to(folder).as_posix(), stat, error))
    return sorted(entries, key=lambda x: x.rel)


def _folder_source(folder: Path, entries: list[Entry]) -> Source:
    if not any(x.error is None for x in entries):
        problems = [x for x in entries if x.error is not None]
        detail = f" ({len(problems)} unusable entries, e.g. {problems[0].rel}: {problems[0].error[1]})"  # type: ignore[index]  # error set (filtered)
        raise CorpusError(
            f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found" + (detail if problems else "")
        )
    stems = [x.rel if x.rel.endswith("/") else x.rel.rsplit(".", 1)[0] for x in entries]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    ids = [s if counts[s] == 1 else x.rel for s, x in zip(stems, entries, strict=True)]
    items = [Item(i, ids[i], str(x.path), stat=x.stat, error=x.error) for i, x in enumerate(entries)]
    return Source("folder", str(folder), items)


# -- manifests ---------------------------------------------------------------------------------------------
def _read_manifest_rows(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path}:{n}: not valid JSON ({e.msg})") from e
                if not isinstance(row, dict):
                    raise CorpusError(f"{path}:{n}: each line must be a JSON object")
                rows.append(row)
        return rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CorpusError(f"{path}: cannot read manifest ({e})") from e


def _manifest_source(path: Path) -> Source:
    rows = _read_manifest_rows(path)
    if not rows:
        raise CorpusError(f"{path}: the manifest has no rows")
    if "path" not in rows[0]:
        raise CorpusError(f"{path}: the manifest needs a 'path' column (found: {', '.join(rows[0])})")
    extra = tuple(c for c in EXTRA_COLUMNS if any(c in r for r in rows))
    items, seen = [], set()
    for i, row in enumerate(rows):
        p = row.get("path")
        if not p:
            raise CorpusError(f"{path}: row {i + 1} has an empty path")
        full = Path(str(p)).expanduser()
        if not full.is_absolute():
            full = path.parent / full
        item_id = str(row["id"]) if row.get("id") not in (None, "") else str(p)
        if item_id in seen:
            raise CorpusError(f"{path}: id {item_id!r} appears twice; ids must be unique")
        seen.add(item_id)
        values = tuple((c, None if row.get(c) is None else str(row[c])) for c in extra)
        stat, error = stat_file(str(full))  # never opened here; a FIFO is listed as an error
        items.append(Item(i, item_id, str(full), values, stat, error))
    return Source("manifest", str(path), items, extra)


# -- Hugging Face datasets ---------------------------------------------------------------------------------
def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise CorpusError(
            "reading a datasets source needs the 'datasets' package: pip install 'rvqkit[corpus]'"
        ) from e
    return datasets


def _pick_split(obj: Any, split: str | None, where: str) -> Any:
    datasets = _datasets()
    if isinstance(obj, (datasets.DatasetDict, dict)):
        names = list(obj)
        if split is None:
            if len(names) == 1:
                split = names[0]
            elif "train" in names:
                split = "train"
            else:
                raise CorpusError(f"{where} has splits {', '.join(names)}; choose one with split=...")
        if split not in obj:
            raise CorpusError(f"{where} has no split {split!r} (splits: {', '.join(names)})")
        return obj[split]
    return obj


def _load_from_disk(path: Path, split: str | None) -> Any:
    datasets = _datasets()
    try:
        obj = datasets.load_from_disk(str(path))
    except Exception as e:  # FileNotFoundError, ValueError, arrow errors
        raise CorpusError(f"{path}: cannot load the saved dataset ({e})") from e
    return _pick_split(obj, split, str(path))


def _load_parquet(files: list[Path], split: str | None) -> Any:
    datasets = _datasets()
    try:
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    except Exception as e:
        raise CorpusError(f"cannot load Parquet files {files[0]} ...: {e}") from e


def _load_hub(name: str, split: str | None) -> Any:
    datasets = _datasets()
    try:
        obj = datasets.load_dataset(name, split=split)
    except Exception as e:  # network, missing dataset, missing split
        raise CorpusError(f"cannot load dataset {name!r}: {e}") from e
    return _pick_split(obj, split, name)


def find_audio_column(dataset: Any, audio_column: str | None = None) -> str:
    """The name of ``dataset``'s ``Audio`` column (the one given, or the only one)."""
    datasets = _datasets()
    audio_cols = [k for k, f in dataset.features.items() if isinstance(f, datasets.Audio)]
    if audio_column is not None:
        if audio_column not in dataset.features:
            raise CorpusError(f"the dataset has no column {audio_column!r}")
        if audio_column not in audio_cols:
            raise CorpusError(f"column {audio_column!r} is not an Audio column")
        return audio_column
    if len(audio_cols) != 1:
        raise CorpusError(
            "the dataset has no Audio column"
            if not audio_cols
            else f"the dataset has several Audio columns ({', '.join(audio_cols)}); choose one with audio_column=..."
        )
    return audio_cols[0]


def undecoded(dataset: Any, column: str) -> Any:
    """``dataset`` with ``column`` cast to ``Audio(decode=False)``: rows hold ``{bytes, path}`` and
    rvqkit decodes them with soundfile (no torchcodec needed)."""
    datasets = _datasets()
    return dataset.cast_column(column, datasets.Audio(decode=False))


def _dataset_source(dataset: Any, location: str, audio_column: str | None) -> Source:
    column = find_audio_column(dataset, audio_column)
    ds = undecoded(dataset, column)
    extra = tuple(c for c in EXTRA_COLUMNS if c in ds.column_names)
    meta = ds.select_columns([c for c in ("id", *extra) if c in ds.column_names])
    audio = ds.select_columns([column]).with_format("arrow")[:][column]  # memory-mapped, no copy
    paths = audio.combine_chunks().field("path").to_pylist() if len(ds) else []
    rows = meta.to_dict() if meta.column_names else {}
    items, seen = [], set()
    for i in range(len(ds)):
        item_id = str(rows["id"][i]) if "id" in rows and rows["id"][i] is not None else f"{i:08d}"
        if item_id in seen:
            raise CorpusError(f"{location}: id {item_id!r} appears twice; ids must be unique")
        seen.add(item_id)
        where = f"{location}[{i}]" + (f" {paths[i]}" if paths[i] else "")
        values = tuple((c, None if rows[c][i] is None else str(rows[c][i])) for c in extra)
        items.append(Item(i, item_id, where, values))
    if not items:
        raise CorpusError(f"{location}: the dataset has no rows")
    return Source("dataset", location, items, extra, dataset=ds, audio_column=column)
