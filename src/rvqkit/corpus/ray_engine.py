"""The Ray engine: the same pipeline on Ray Data, for many cores, GPUs or machines.

The driver lists the items and writes the shards (the same :class:`~rvqkit.corpus.pipeline.ShardCollector`
as the local engine, so the output is the same); a pool of codec actors (``map_batches`` with
``concurrency``), one per CPU core or GPU, decodes, resamples and encodes batches of items. Audio files
are read by the actors, so on a multi-node cluster the paths must be readable on every node (shared
file system); the output folder is written by the driver only. Items of a ``datasets`` source travel
as bytes from the driver.

Needs ``pip install 'rvqkit[ray]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..runtime import tune_allocator
from .encoding import auto_batch_samples, encode_loaded
from .items import CorpusError, Item, Result
from .loading import LoadSpec, load_item
from .models import CorpusModel, load_model
from .sources import Source

ITEMS_PER_CALL = 8  # items per actor call; each call sorts its items by length


class CodecActor:
    """A Ray Data actor holding one codec: ``{index, path, data}`` rows in, packed results out."""

    def __init__(
        self,
        model: str | CorpusModel,
        bandwidth: float | None,
        device: str,
        spec: LoadSpec,
        batch_seconds: float | None,
        threads: int | None,
        lstm_batch: int,
        n_q: int | None = None,
    ):
        import torch

        tune_allocator()  # as the CLI does in the driver
        if threads:
            torch.set_num_threads(threads)
        self.codec = load_model(model, device)  # EnCodec, Mimi, DAC or SNAC
        self.bandwidth, self.spec, self.lstm_batch, self.n_q = bandwidth, spec, lstm_batch, n_q
        self.max_samples = auto_batch_samples(self.codec, batch_seconds)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = []
        rows = zip(
            batch["index"], batch["path"], batch["data"], batch["size"], batch["mtime_ns"], strict=True
        )
        for index, path, data, size, mtime_ns in rows:
            payload = bytes(data) if data is not None and len(data) else str(path)
            listed = (int(size), int(mtime_ns)) if size >= 0 else None
            loaded.append(load_item(int(index), payload, self.spec, listed))
        return pack(
            encode_loaded(self.codec, loaded, self.bandwidth, self.max_samples, self.lstm_batch, self.n_q)
        )


def pack(results: Sequence[Result]) -> dict[str, np.ndarray]:
    """Results as columns Ray can move between processes (codes and scales as raw bytes)."""

    def col(values: list, dtype: Any = object) -> np.ndarray:
        out = np.empty(len(values), dtype=dtype)
        out[:] = values
        return out

    return {
        "index": col([r.index for r in results], np.int64),
        "sample_rate": col([r.sample_rate for r in results], np.int64),
        "channels": col([r.channels for r in results], np.int64),
        "num_samples": col([r.num_samples for r in results], np.int64),
        "reason": col([r.reason or "" for r in results]),
        "message": col([r.message or "" for r in results]),
        "model_samples": col([r.model_samples for r in results], np.int64),
        # codes: [n_q, frames] arrays, or SNAC's lists of levels ("levels": each level's frames)
        "n_q": col([0 if r.codes is None else len(r.codes) for r in results], np.int64),
        "levels": col([_level_lengths(r.codes) for r in results]),
        "codes": col([b"" if r.codes is None else _flat(r.codes).tobytes() for r in results]),
        "scales": col([b"" if r.scales is None else r.scales.astype(np.float32).tobytes() for r in results]),
    }


def _flat(codes: Any) -> np.ndarray:
    if isinstance(codes, list):
        return np.concatenate([np.asarray(c, np.int16).reshape(-1) for c in codes])
    return np.asarray(codes, np.int16).reshape(-1)


def _level_lengths(codes: Any) -> bytes:
    """SNAC: each level's frames as int64 bytes; empty for [n_q, frames] arrays (and errors)."""
    return np.array([len(c) for c in codes], np.int64).tobytes() if isinstance(codes, list) else b""


def unpack(batch: dict[str, np.ndarray]) -> list[Result]:
    out = []
    for i in range(len(batch["index"])):
        r = Result(
            int(batch["index"][i]),
            int(batch["sample_rate"][i]),
            int(batch["channels"][i]),
            int(batch["num_samples"][i]),
        )
        if batch["reason"][i]:
            r.reason, r.message = str(batch["reason"][i]), str(batch["message"][i]) or None
        else:
            n_q = int(batch["n_q"][i])
            r.model_samples = int(batch["model_samples"][i])
            flat = np.frombuffer(bytes(batch["codes"][i]), dtype=np.int16).copy()
            levels = np.frombuffer(bytes(batch["levels"][i]), dtype=np.int64)
            if len(levels):  # SNAC
                r.codes = np.split(flat, np.cumsum(levels)[:-1])
            else:
                r.codes = flat.reshape(n_q, -1)
            if len(batch["scales"][i]):
                r.scales = np.frombuffer(bytes(batch["scales"][i]), dtype=np.float32).copy()
        out.append(r)
    return out


def run_ray(
    collector: Any,
    source: Source,
    items: Sequence[Item],
    spec: LoadSpec,
    *,
    model: str | CorpusModel,
    bandwidth: float | None,
    device: str = "cpu",
    batch_seconds: float | None = None,
    lstm_batch: int,
    address: str | None = None,
    num_actors: int | None = None,
    n_q: int | None = None,
) -> None:
    """Encode ``items`` on Ray Data and hand the results to ``collector`` as they arrive. ``model``:
    EnCodec, Mimi, DAC or SNAC (a source each actor loads, or a loaded model sent to them); ``n_q``
    (codebooks) when given, else that of ``bandwidth`` (kbps).

    Connects to ``address`` (``"auto"``: the cluster started with ``ray start`` on this machine; None:
    ``RAY_ADDRESS`` if set, else a new local instance), unless Ray is already initialised."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise CorpusError("engine='ray' needs Ray: pip install 'rvqkit[ray]'") from e
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # rvqkit shows its own
    gpu = device.startswith("cuda")
    resources = ray.cluster_resources()
    if num_actors is None:
        num_actors = int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 1))
    if num_actors < 1:
        raise CorpusError("the Ray cluster has no " + ("GPU" if gpu else "CPU") + " to run codec actors on")
    rows = []
    for it in items:
        if it.error is not None:  # found unusable while listing: never opened
            collector.add([Result(it.index, reason=it.error[0], message=it.error[1])])
            continue
        payload = source.payload(it)
        is_bytes = isinstance(payload, (bytes, bytearray))
        size, mtime_ns = it.stat or (-1, -1)
        rows.append(
            {
                "index": it.index,
                "path": "" if is_bytes else payload,
                "data": payload if is_bytes else b"",
                "size": size,
                "mtime_ns": mtime_ns,
            }
        )
    if not rows:
        return
    # enough blocks that every actor gets work, few enough that per-block overhead stays small
    blocks = max(1, min(len(rows), max(4 * num_actors, len(rows) // ITEMS_PER_CALL), 10_000))
    ds: ray.data.Dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(
        CodecActor,
        fn_constructor_kwargs={
            "model": model,
            "bandwidth": bandwidth,
            "device": "cuda" if gpu else device,
            "spec": spec,
            "batch_seconds": batch_seconds,
            "threads": None if gpu else 1,
            "lstm_batch": lstm_batch,
            "n_q": n_q,
        },
        batch_size=ITEMS_PER_CALL,
        batch_format="numpy",
        concurrency=num_actors,
        num_cpus=1,
        num_gpus=1 if gpu else 0,
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        collector.add(unpack(batch))
