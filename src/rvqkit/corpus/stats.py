"""What a corpus output holds: hours, items, errors, how each codebook is used, and how long its token
sequences are per second of audio in each token layout.

Shards are read batch by batch (only the columns needed), so memory stays bounded by one batch plus a
``[n_q, codebook_size]`` histogram and one float per row, whatever the corpus size. A job that is still
running (or was killed) is summed over its finished shards.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .items import CorpusError
from .shards import OutputDir

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..tokens.patterns import LayoutName

BATCH_ROWS = 256  # rows per read; a row holds n_q x frames int16 codes


@dataclass(frozen=True)
class CodebookUsage:
    """Use of one codebook over the corpus: ``distinct`` codes seen, and the entropy of the codes'
    distribution in bits, with its ``perplexity`` (2 ** entropy: the number of equally used codes that
    would give that entropy; at most ``codebook_size``)."""

    codebook: int
    distinct: int
    entropy_bits: float
    perplexity: float


@dataclass(frozen=True)
class LayoutRate:
    """Length of a token layout per second of audio: sequence ``positions`` (steps of all streams for
    multi-stream layouts) and token ids (positions x streams), item begin/end tokens included."""

    layout: str
    streams: int
    positions_per_second: float
    tokens_per_second: float
    settings: str  # "default" or "as written" (the job's own --tokens settings)


@dataclass
class CorpusStats:
    """Summary of a corpus output folder; :meth:`to_dict` gives the JSON form."""

    out_dir: str
    status: str  # manifest status: "complete" or "running" (a running or killed job: finished shards)
    model: str
    bandwidth: float  # kbps
    n_q: int
    codebook_size: int
    frame_rate: float  # frames per second (SNAC: of the finest level)
    items: int  # inputs of the finished shards
    rows: int
    errors: int
    errors_by_reason: dict[str, int]
    shards_done: int
    num_shards: int
    audio_seconds: float  # original durations of the rows
    frames: int
    codebooks: list[CodebookUsage]
    layouts: list[LayoutRate]
    histogram: np.ndarray = field(repr=False)  # int64 [n_q, codebook_size]: code counts
    durations: np.ndarray = field(repr=False)  # float32 [rows]: seconds
    family: str = "encodec"  # or "mimi", "dac", "snac" (SNAC: n_q counts levels, frames the finest)

    @property
    def hours(self) -> float:
        return self.audio_seconds / 3600

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["histogram"], d["durations"]
        d["hours"] = self.hours
        return d


def entropy_bits(counts: np.ndarray) -> float:
    """Entropy in bits of the distribution given by ``counts`` (0 for no counts)."""
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum()) + 0.0


def _add_codes(hist: np.ndarray, codes: pa.ChunkedArray | pa.Array) -> None:
    """Add the codes of a ``list<list<int>>`` column (``[row][codebook][frame]``) to ``hist``."""
    n_q, size = hist.shape
    chunks = codes.chunks if isinstance(codes, pa.ChunkedArray) else [codes]
    for col in chunks:
        col = col.filter(pc.is_valid(col)) if col.null_count else col
        if len(col) == 0:
            continue
        inner = col.flatten()  # one list per (row, codebook)
        per_row = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if per_row.max() > n_q:
            raise CorpusError(f"a row holds {per_row.max()} codebooks; the manifest says {n_q}")
        first = np.repeat(np.cumsum(per_row) - per_row, per_row)
        book = np.arange(len(inner)) - first  # codebook of each inner list
        values = inner.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        if len(values) == 0:
            continue
        if values.min() < 0 or values.max() >= size:
            raise CorpusError(f"codes outside [0, {size}) in the shards: not this model's codes")
        frames = pc.list_value_length(inner).to_numpy(zero_copy_only=False)
        hist += np.bincount(np.repeat(book, frames) * size + values, minlength=n_q * size).reshape(n_q, size)


def _token_reader(manifest: dict[str, Any]):
    """For shards without a codes column: (column, ``ids -> codes [n_q, frames]``) from the first token
    layout of the manifest."""
    import torch

    from ..tokens import TokenLayout

    specs = manifest.get("tokens") or []
    if not specs:
        raise CorpusError("the shards hold neither codes nor token columns described in manifest.json")
    layout = TokenLayout.from_settings(specs[0]["settings"])

    def read(ids: Any) -> np.ndarray:
        codes, frames = layout.decode(torch.tensor(np.asarray(ids, dtype=np.int64))[None])
        return codes[0, :, : int(frames[0])].numpy()

    return specs[0]["column"], read


def layout_rates(
    n_q: int, codebook_size: int, rows: int, frames: int, audio_seconds: float, written: list | None = None
) -> list[LayoutRate]:
    """Positions and tokens per audio second of every token layout for ``rows`` items of ``frames`` code
    frames in all: the job's own layout settings where it wrote that layout, else the defaults (no begin
    or end token). A layout's length is affine in an item's frames, so the totals are exact."""
    from ..tokens import LAYOUTS, TokenLayout

    own = {s["settings"]["layout"]: s["settings"] for s in written or []}
    out = []
    for name in LAYOUTS:
        if name in own:
            layout, how = TokenLayout.from_settings(own[name]), "as written"
        else:
            layout, how = TokenLayout(cast("LayoutName", name), n_q, codebook_size), "default"
        per_frame = layout.length(1) - layout.length(0)
        positions = per_frame * frames + layout.length(0) * rows
        streams = layout.n_q if layout.multi_stream else 1
        pps = positions / audio_seconds if audio_seconds > 0 else 0.0
        out.append(LayoutRate(name, streams, pps, pps * streams, how))
    return out


def corpus_stats(out_dir: str | os.PathLike[str], batch_rows: int = BATCH_ROWS) -> CorpusStats:
    """Statistics of a corpus output folder (see the module docstring)."""
    out = OutputDir(out_dir)
    manifest = out.read_manifest()
    if manifest is None:
        raise CorpusError(f"{out.root}: no manifest.json (not a corpus output folder)")
    try:
        n_q, size = int(manifest["n_q"]), int(manifest["model"]["codebook_size"])
        frame_rate = float(manifest["model"]["frame_rate"])
        num_shards = int(manifest["num_shards"])
    except (KeyError, TypeError, ValueError) as e:
        raise CorpusError(f"{out.manifest_path}: malformed manifest ({e})") from e
    records = [rec for k in range(num_shards) if (rec := out.read_record(k)) is not None]
    hist = np.zeros((n_q, size), dtype=np.int64)
    durations: list[np.ndarray] = []
    frames = 0
    reasons: dict[str, int] = {}
    for rec in records:
        for err in rec["errors"]:
            reasons[err["reason"]] = reasons.get(err["reason"], 0) + 1
        if not rec["file"]:
            continue
        path = out.root / rec["file"]
        try:
            pf = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as e:
            raise CorpusError(f"{path}: not a readable Parquet shard ({e})") from e
        names = pf.schema_arrow.names
        token_column, from_tokens = (None, None) if "codes" in names else _token_reader(manifest)
        columns = ["duration", "num_frames", token_column or "codes"]
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            durations.append(batch.column("duration").to_numpy(zero_copy_only=False).astype(np.float32))
            frames += int(pc.sum(batch.column("num_frames")).as_py() or 0)
            if from_tokens is None:
                _add_codes(hist, batch.column("codes"))
            else:
                for ids in batch.column(token_column).to_pylist():
                    c = from_tokens(ids)
                    for k in range(c.shape[0]):
                        hist[k] += np.bincount(c[k], minlength=size)[:size]
    dur = np.concatenate(durations) if durations else np.zeros(0, np.float32)
    family = str(manifest.get("family", "encodec"))
    audio_seconds = float(dur.astype(np.float64).sum())
    books = []
    for k in range(n_q):
        h = entropy_bits(hist[k])
        books.append(CodebookUsage(k, int((hist[k] > 0).sum()), h, 2.0**h))
    rows = int(len(dur))
    return CorpusStats(
        out_dir=str(out.root),
        status=str(manifest.get("status", "?")),
        model=str(manifest["model"].get("name", "?")),
        bandwidth=float(manifest.get("bandwidth", math.nan)),
        n_q=n_q,
        codebook_size=size,
        frame_rate=frame_rate,
        items=sum(len(rec["inputs"]) for rec in records),
        rows=rows,
        errors=sum(reasons.values()),
        errors_by_reason=dict(sorted(reasons.items())),
        shards_done=len(records),
        num_shards=num_shards,
        audio_seconds=audio_seconds,
        frames=frames,
        codebooks=books,
        # SNAC's levels run at several frame rates: no one-rate token layout applies
        layouts=[]
        if family == "snac"
        else layout_rates(n_q, size, rows, frames, audio_seconds, manifest.get("tokens")),
        histogram=hist,
        durations=dur,
        family=family,
    )


# -- figure ---------------------------------------------------------------------------------------------
def stats_figure(stats: CorpusStats) -> Figure:
    """Item durations, per-codebook perplexity and distinct codes, and each codebook's code histogram
    (matplotlib, the ``plot`` extra)."""
    from ..plots import _figure

    fig = _figure(10, 4.2 + 0.18 * stats.n_q)
    # subfigures(3, 1) gives an array of 3; the stub types it as one SubFigure or an array
    top, mid, low = fig.subfigures(3, 1, height_ratios=[1.0, 1.0, 0.6 + 0.12 * stats.n_q])  # type: ignore[misc]
    ax = top.subplots()
    if len(stats.durations):
        ax.hist(stats.durations, bins=min(60, max(5, len(stats.durations) // 4)), color="tab:blue")
    ax.set_xlabel("item duration (s)")
    ax.set_ylabel("items")
    ax.set_title(
        f"{stats.rows} items, {stats.hours:.3f} h of audio, {stats.errors} errors "
        f"({stats.model}, {stats.bandwidth:g} kbps)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax = mid.subplots()
    k = np.arange(stats.n_q)
    ax.bar(k, [b.perplexity for b in stats.codebooks], color="tab:green", label="perplexity (2^entropy)")
    ax.plot(k, [b.distinct for b in stats.codebooks], "o", color="tab:red", label="distinct codes")
    ax.set_xticks(k, [str(i) for i in k], fontsize=7)
    ax.set_xlabel("codebook")
    ax.set_ylabel(f"codes (of {stats.codebook_size})")
    ax.set_title(f"Codebook use over {stats.frames} frames", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax = low.subplots()
    image = ax.imshow(
        np.log10(1 + stats.histogram),
        aspect="auto",
        origin="upper",
        cmap="viridis",
        interpolation="nearest",
        extent=(-0.5, stats.codebook_size - 0.5, stats.n_q - 0.5, -0.5),
    )
    ax.set_xlabel("code")
    ax.set_ylabel("codebook")
    ax.set_title("Code histogram of each codebook", fontsize=10)
    low.colorbar(image, ax=ax, label="log10(1 + count)")
    return fig


def save_stats_png(stats: CorpusStats, path: str | os.PathLike[str]) -> Path:
    """Write :func:`stats_figure` as a PNG (atomically: whole or absent)."""
    from ..atomic import write_atomic
    from ..plots import DPI

    fig = stats_figure(stats)
    target = Path(path)
    write_atomic(target, lambda p: fig.savefig(p, dpi=DPI, format="png"))
    return target
