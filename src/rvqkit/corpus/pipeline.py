"""Encode a whole corpus to sharded Parquet: job set-up and resume, and the local engine.

The local engine decodes and resamples audio in worker processes (a ``ProcessPoolExecutor`` kept
``prefetch`` items ahead) while the main process runs the model on windows of items sorted by length.
Finished shards are written as soon as all their items are done (see :mod:`rvqkit.corpus.shards`).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..codec import Codec
from .encoding import CPU_LSTM_BATCH, auto_batch_samples, iter_encode
from .items import CorpusError, Item, Loaded, Result
from .job import DEFAULT_MIN_DURATION, DEFAULT_SHARD_SIZE, DEFAULT_WINDOW, CorpusJob, JobSettings
from .loading import LoadSpec, load_item
from .lock import JobLock
from .models import CorpusModel, family_name, is_family, load_model
from .progress import JobProgress, ProgressCallback
from .shards import OutputDir, ShardLayout, schema
from .sources import Source, open_source
from .tokenize import TokenSpec

#: A window holds at most this many batches' worth of audio: on CPU 2 (480 s; batches are large there so
#: that 8 items share LSTM calls), on a GPU 8 (more equal lengths to group).
WINDOW_BATCHES = {"cpu": 2, "gpu": 8}
WORKER_NICENESS = 10  # decoding workers yield the CPU to the model's threads


@dataclass
class CorpusSummary:
    """What a job did. ``counts`` covers the whole output (earlier runs included)."""

    out_dir: Path
    manifest: dict[str, Any]
    shards_written: int  # by this run
    shards_resumed: int  # finished by an earlier run
    audio_seconds: float  # encoded by this run
    wall_seconds: float  # of this run, model loading excluded
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def rtf(self) -> float | None:
        """Real-time factor of this run: wall seconds per audio second."""
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else None


class ShardCollector:
    """Collects results per shard and writes each shard as soon as all its items are done."""

    def __init__(
        self,
        out: OutputDir,
        items: Sequence[Item],
        layout: ShardLayout,
        sch: Any,
        progress: JobProgress,
        tokens: Sequence[TokenSpec] = (),
    ):
        self.out, self.items, self.layout, self.schema = out, items, layout, sch
        self.num_shards = layout.num_shards
        self.pending: dict[int, dict[int, Result]] = {}
        self.progress = progress
        self.tokens = tokens
        self.written = 0
        self.audio_seconds = 0.0

    def shard_items(self, k: int) -> Sequence[Item]:
        start, end = self.layout.bounds(k)
        return self.items[start:end]

    def add(self, results: Sequence[Result]) -> None:
        touched = set()
        for r in results:
            if r.ok and self.tokens:
                r.tokens = {s.column: s.make(r.codes) for s in self.tokens}  # type: ignore[arg-type]  # ok: codes set
            k = self.layout.shard_of(r.index)
            self.pending.setdefault(k, {})[r.index] = r
            touched.add(k)
        seconds = sum(r.duration for r in results if r.ok)
        self.audio_seconds += seconds
        for k in sorted(touched):
            items = self.shard_items(k)
            if len(self.pending[k]) == len(items):
                got = self.pending.pop(k)
                self.out.write_shard(k, self.num_shards, items, [got[it.index] for it in items], self.schema)
                self.written += 1
        # after the shards are written: a progress report never runs ahead of what is on disk
        self.progress.advance(len(results), seconds, sum(1 for r in results if not r.ok))


def _init_worker(parent: int) -> None:
    """Worker initializer: run at a lower priority than the model (the workers only prefetch, so the
    model's threads should not wait for them), and exit when the job process is gone (e.g. killed
    with kill -9)."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(WORKER_NICENESS)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def listing_error(item: Item) -> Loaded | None:
    """The error of an entry found unusable while listing (FIFO, dangling link ...), which is never opened."""
    return None if item.error is None else Loaded(item.index, reason=item.error[0], message=item.error[1])


def iter_loaded(
    source: Source, items: Sequence[Item], spec: LoadSpec, workers: int, prefetch: int
) -> Iterator[Loaded]:
    """Loaded items in the given order; with ``workers`` > 0 decoded in that many processes, at most
    ``prefetch`` items ahead of the consumer (``workers`` = 0 decodes in this process)."""
    if workers <= 0:
        for it in items:
            yield listing_error(it) or load_item(it.index, source.payload(it), spec, it.stat)
        return
    # spawn, not fork: the parent holds torch's thread pools, which do not survive a fork safely
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
    ) as pool:
        queue: deque = deque()
        todo = iter(items)

        def submit() -> None:
            it = next(todo, None)
            if it is None:
                return
            failed = listing_error(it)
            if failed is not None:  # never opened: a finished future keeps the source order
                fut: Future = Future()
                fut.set_result(failed)
                queue.append(fut)
            else:
                queue.append(pool.submit(load_item, it.index, source.payload(it), spec, it.stat))

        for _ in range(max(1, prefetch)):
            submit()
        while queue:
            fut = queue.popleft()
            submit()
            try:
                yield fut.result()
            except BrokenProcessPool as e:
                raise CorpusError(
                    "an audio decoding worker died (out of memory?); re-run the same command to resume"
                ) from e


def run_local(
    collector: ShardCollector,
    source: Source,
    items: Sequence[Item],
    spec: LoadSpec,
    codec: CorpusModel,
    bandwidth: float | None,
    max_samples: int,
    workers: int,
    window: int,
    lstm_batch: int,
    first_end: int = 0,
    n_q: int | None = None,
) -> None:
    """The local engine: windows of ``window`` items (or of ``WINDOW_BATCHES`` batches' worth of audio,
    whichever is less), sorted by length inside a window and batched. The workers load up to one more
    window meanwhile, so at most about two windows of audio are in memory. A window also ends after the
    item of index ``first_end - 1`` (the first shard's last), so that the first shard is written early.
    ``n_q`` (codebooks) when given, else that of ``bandwidth`` (kbps)."""
    buffer: list[Loaded] = []
    buffered = 0  # samples at the model rate
    window_batches = WINDOW_BATCHES["cpu" if codec.device.type == "cpu" else "gpu"]

    def flush() -> None:
        nonlocal buffered
        for results in iter_encode(codec, buffer, bandwidth, max_samples, lstm_batch, n_q):
            collector.add(results)
        buffer.clear()
        buffered = 0

    for loaded in iter_loaded(source, items, spec, workers, prefetch=window):
        buffer.append(loaded)
        buffered += 0 if loaded.audio is None else loaded.audio.shape[-1]
        # the first shard is small and goes alone, so that it is on disk early
        end_of_first = loaded.index == first_end - 1
        if len(buffer) >= window or buffered >= window_batches * max_samples or end_of_first:
            flush()
    flush()


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def encode_corpus(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    model: str | os.PathLike[str] | CorpusModel = "facebook/encodec_24khz",
    bandwidth: float | None = None,
    *,
    n_q: int | None = None,
    device: str = "cpu",
    shard_size: int = DEFAULT_SHARD_SIZE,
    first_shard_size: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
    lstm_batch: int = CPU_LSTM_BATCH,
    window: int = DEFAULT_WINDOW,
    batch_seconds: float | None = None,
    min_duration: float = DEFAULT_MIN_DURATION,
    max_duration: float | None = None,
    audio_column: str | None = None,
    split: str | None = None,
    tokens: Sequence[Any] = (),
    token_offset: int = 0,
    token_begin: bool | int = False,
    token_end: bool | int = False,
    codes: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
    num_actors: int | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    log: Callable[[str], None] | None = None,
    model_source: str | os.PathLike[str] | None = None,
) -> CorpusSummary:
    """Encode every item of ``source`` at ``bandwidth`` kbps (or ``n_q`` codebooks) into sharded Parquet
    in ``out_dir``, with EnCodec or a Mimi, DAC or SNAC model.

    Re-running the same call on the same folder resumes: finished shards are kept, the others are
    (re)done; the inputs are those listed by the first run (a file gone or changed since becomes an
    ``errors.jsonl`` line). One job at a time holds ``out_dir`` (``out_dir/.lock``). See
    ``docs/corpus.md`` for the columns and the folder layout.

    Args:
        source: audio folder, ``.csv``/``.jsonl`` manifest, datasets folder / Parquet, or hub dataset.
        model: hub id, model folder or weights file of EnCodec, Mimi, DAC or SNAC (the family is
            :func:`rvqkit.families.family_of`'s), a loaded :class:`~rvqkit.Codec`, or a
            :class:`~rvqkit.family_codec.FamilyCodec` from :func:`rvqkit.families.load_family_model`.
            Each item's codes equal ``Codec.encode`` (see ``lstm_batch``) / ``FamilyCodec.encode`` of
            that item alone, whatever it is batched with.
        bandwidth: kbps. EnCodec: one of its bandwidths (default 6). Mimi, DAC, SNAC: only a bandwidth
            that is exactly one of the model's (as ``rvqkit encode -b``), else give ``n_q``.
        n_q: Mimi, DAC and SNAC: codebooks (SNAC: levels, coarsest first) to keep, 1 to the model's
            number (default: all). Not for EnCodec (give ``bandwidth``).
        shard_size: items per shard (rows per Parquet file, fewer where items fail).
        first_shard_size: items of the first shard (default
            :data:`~rvqkit.corpus.job.DEFAULT_FIRST_SHARD_SIZE`, at most
            ``shard_size``; a resumed job keeps its own): a small first shard is on disk early, so a
            job killed soon after it starts keeps that work.
        workers: audio decoding processes (default: CPU cores - 1, at most 8; 0 = in this process).
        threads: torch threads for the model on CPU during the job (default: torch's setting, all
            cores; the decoding workers run at a lower priority; restored afterwards: measured on 2
            cores, 2 model threads were 1.7x faster than 1 beside the worker). Codes can differ in rare
            near-ties between thread counts (floating-point sums in another order), so resume a job
            with the same setting.
        lstm_batch: on CPU, items whose encoder LSTM runs as one batch (the rest of the network runs
            item by item). 2 or more is about 1.15x faster than 1 and gives every item the same codes
            whatever its batch; they can differ from ``Codec.encode``'s default (1, a batch of one as
            the reference implementations) at rare near-ties. 1: each item exactly as ``Codec.encode``.
        window: items sorted by length together before batching.
        batch_seconds: audio seconds per model call (default: from free GPU memory, 240 s on CPU).
        min_duration, max_duration: accepted item durations in seconds; others go to ``errors.jsonl``.
        tokens: token layouts to write beside the codes: names (``flatten``, ``codebook``, ``delay``,
            ``parallel``, built with ``token_offset`` / ``token_begin`` / ``token_end``) or
            :class:`~rvqkit.tokens.TokenLayout` objects; see :mod:`rvqkit.corpus.tokenize`.
        codes: write the ``codes`` column (False: token columns only).
        engine: ``"local"`` or ``"ray"`` (Ray Data; ``ray_address`` / ``num_actors`` apply).
        progress: called with an :class:`~rvqkit.corpus.progress.EncodeProgress` when the job starts
            encoding and after each group of items is encoded (every ``lstm_batch`` items on CPU).
        log: called with one-line notes for the user (a stale lock taken over).
        model_source: where ``model`` was loaded from when a Codec is given (stored in the manifest,
            used by ``decode`` and by Ray actors to load their own copy).
    """
    settings = JobSettings(
        bandwidth=bandwidth, n_q=n_q, device=device, shard_size=shard_size, first_shard_size=first_shard_size,
        workers=workers, threads=threads, lstm_batch=lstm_batch, window=window, batch_seconds=batch_seconds,
        min_duration=min_duration, max_duration=max_duration, audio_column=audio_column, split=split,
        tokens=tuple(tokens), token_offset=token_offset, token_begin=token_begin, token_end=token_end,
        codes=codes, engine=engine, ray_address=ray_address, num_actors=num_actors,
    )  # fmt: skip
    if progress is not None and not callable(progress):
        raise CorpusError(f"progress must be a callable taking an EncodeProgress, got {progress!r}")
    codec = load_model(model, device)
    token_specs = settings.token_specs(codec)
    src = open_source(source, audio_column=audio_column, split=split)
    out = OutputDir(out_dir)
    out.check_usable(overwrite)  # before anything (the lock file) is written in someone else's folder
    out.root.mkdir(parents=True, exist_ok=True)
    with JobLock(out.root) as lock:
        if lock.note and log is not None:
            log(lock.note)
        old = None if overwrite else out.read_manifest()
        if old is not None:
            src = resumed_source(src, out.read_inputs())
        job = CorpusJob.create(
            settings, codec, _model_source(model, codec, model_source), src, token_specs, old
        )
        out.prepare(job, overwrite)
        if src.kind in ("folder", "manifest") and (overwrite or not out.inputs_path.is_file()):
            out.write_inputs(src.items)  # before any shard: what a re-run resumes
        return _run(out, job, src, codec, progress)


def _model_source(
    model: str | os.PathLike[str] | CorpusModel, codec: CorpusModel, given: str | os.PathLike[str] | None
) -> str:
    """What the manifest records as the model's origin: ``given``, else the model argument (a Codec's
    name, a FamilyCodec's source); a path that exists as an absolute path, so that it works from
    another folder."""
    if given is not None:
        text = str(given)
    elif isinstance(model, Codec):
        text = model.name
    elif is_family(model):
        text = str(model.source)
    else:
        text = str(model)
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def resumed_source(src: Source, recorded: list[Item] | None) -> Source:
    """``src`` with the items its job listed when it started (``recorded``), for a re-run.

    A folder's files that are gone since stay items (they become ``vanished`` errors when their shard
    is done); files that were not listed then are refused: shards are fixed ranges of the job's item
    order, so new inputs need a new job. A manifest keeps its rows (its fingerprint decides), with the
    stats and listing errors recorded then. Other sources, and folders without a record (written by
    older versions), are listed afresh."""
    if recorded is None or src.kind not in ("folder", "manifest"):
        return src
    if src.kind == "manifest":
        if [(it.id, it.path) for it in recorded] != [(it.id, it.path) for it in src.items]:
            return src  # another manifest: the job comparison refuses it
        items = [replace(it, stat=r.stat, error=r.error) for it, r in zip(src.items, recorded, strict=True)]
        return replace(src, items=items)
    known = {it.path for it in recorded}
    new = [it for it in src.items if it.path not in known]
    if new:
        raise CorpusError(
            f"{src.location} has {len(new)} audio file{'s' if len(new) > 1 else ''} that this job did not "
            f"list when it started (first: {new[0].path}); a job's inputs are fixed when it starts: "
            "encode them into another output folder, or pass overwrite=True to start over"
        )
    return replace(src, items=recorded)


def _run(
    out: OutputDir, job: CorpusJob, src: Source, codec: CorpusModel, progress: ProgressCallback | None
) -> CorpusSummary:
    """Encode the shards not done yet and finish the output folder (under the job's lock)."""
    items, layout, s = src.items, job.layout, job.settings
    done = {k: rec for k in range(layout.num_shards) if (rec := out.read_record(k)) is not None}
    todo = [it for it in items if layout.shard_of(it.index) not in done]
    has_scales = isinstance(codec, Codec) and codec.config.normalize
    sch = schema(has_scales, src.extra_columns, [t.field for t in job.tokens], s.codes)
    sch = sch.with_metadata(
        {
            "rvqkit.family": family_name(codec),
            "rvqkit.model_source": job.model_source,
            "rvqkit.n_q": str(job.n_q),
        }
    )
    spec = LoadSpec(codec.sample_rate, codec.channels, s.min_duration, s.max_duration)
    start = time.perf_counter()
    counter = JobProgress(len(items), len(items) - len(todo), progress)
    counter.report()
    collector = ShardCollector(out, items, layout, sch, counter, job.tokens)
    if todo and s.engine == "local":
        _encode_local(collector, job, src, todo, spec, codec, first_end=layout.first if 0 not in done else 0)
    elif todo:
        from .ray_engine import run_ray

        run_ray(
            collector, src, todo, spec, bandwidth=None, n_q=job.n_q, device=s.device, batch_seconds=s.batch_seconds,
            model=job.model_source if _loadable(job.model_source) else codec, lstm_batch=s.lstm_batch,
            address=s.ray_address, num_actors=s.num_actors,
        )  # fmt: skip
    wall = time.perf_counter() - start
    manifest = out.finish(job, _records(out, layout.num_shards), wall)
    return CorpusSummary(
        out_dir=out.root,
        manifest=manifest,
        shards_written=collector.written,
        shards_resumed=len(done),
        audio_seconds=collector.audio_seconds,
        wall_seconds=wall,
        counts=manifest["counts"],
    )


def _encode_local(
    collector: ShardCollector,
    job: CorpusJob,
    src: Source,
    todo: Sequence[Item],
    spec: LoadSpec,
    codec: CorpusModel,
    first_end: int,
) -> None:
    """:func:`run_local` with the job's settings, the model on ``threads`` torch threads (restored
    afterwards; the workers run at a lower priority and only fill gaps)."""
    s = job.settings
    saved = torch.get_num_threads()
    if codec.device.type == "cpu":
        torch.set_num_threads(s.threads or saved)
    try:
        run_local(
            collector, src, todo, spec, codec, s.bandwidth, auto_batch_samples(codec, s.batch_seconds),
            default_workers() if s.workers is None else s.workers, s.window, s.lstm_batch, first_end=first_end,
            n_q=job.n_q,
        )  # fmt: skip
    finally:
        torch.set_num_threads(saved)


def _records(out: OutputDir, num_shards: int) -> list[dict[str, Any]]:
    """Every shard's record; a shard not written is an error (re-running finishes it)."""
    records = []
    for k in range(num_shards):
        rec = out.read_record(k)
        if rec is None:
            raise CorpusError(f"shard {k} was not written; re-run the same command to finish it")
        records.append(rec)
    return records


def _loadable(model_source: str | os.PathLike[str]) -> bool:
    """Whether Ray actors can load the weights themselves (a path or hub id), rather than be sent them."""
    text = str(model_source)
    return Path(text).expanduser().exists() or ("/" in text and not text.startswith((".", "/", "~")))
