"""Run the model on loaded items: sort by length, cut into batches within a memory budget, and encode
each batch through the batching engine (:mod:`rvqkit.engine`): on CPU :data:`CPU_LSTM_BATCH` items in
flight, their steps sharing model calls; on a GPU :data:`rvqkit.codec.GPU_SLOTS`. An item's codes do not
depend on its batch (the engine's rule), so the budget and the order change nothing but speed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..codec import Codec
from .items import Loaded, Result
from .models import CorpusModel, resolve_n_q

if TYPE_CHECKING:
    from ..family_codec import FamilyCodec

#: Audio seconds per engine batch on CPU (the items loaded and in memory at once). The engine runs them in
#: 1 s feeds, so activations stay small whatever the batch.
CPU_BATCH_SECONDS = 240.0
#: On CPU, items in flight in the engine, their steps sharing model calls (``Codec.encode(lstm_batch=)``);
#: 1 runs each item alone, as ``Codec.encode`` does by default. Measured per item and LSTM step: 36 us
#: alone, 10 us in a batch of 8, 9.8 us in one of 16.
CPU_LSTM_BATCH = 8
GPU_BYTES_PER_SAMPLE = 2048  # rough peak activation memory per input sample of the encoder (float32)


def auto_batch_samples(codec: CorpusModel, batch_seconds: float | None = None) -> int:
    """Samples (at the model rate, all items of a batch together) per model call.

    ``batch_seconds`` fixes it; otherwise on CUDA it is half the free GPU memory divided by a rough
    per-sample activation cost, and on CPU :data:`CPU_BATCH_SECONDS`.
    """
    if batch_seconds is not None:
        return max(1, int(batch_seconds * codec.sample_rate))
    if codec.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(codec.device)
        return max(codec.sample_rate, int(0.5 * free / (GPU_BYTES_PER_SAMPLE * codec.channels)))
    return int(CPU_BATCH_SECONDS * codec.sample_rate)


def plan_batches(lengths: Sequence[int], max_samples: int) -> list[list[int]]:
    """Positions of ``lengths`` grouped into batches: sorted by length (ties in given order), each
    batch's total at most ``max_samples`` (a longer item gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        if current and total + lengths[i] > max_samples:
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += lengths[i]
    if current:
        batches.append(current)
    return batches


def _encode_family(codec: FamilyCodec, audio: list[np.ndarray], n_q: int) -> list[tuple]:
    """(codes, None) per item of a Mimi, DAC or SNAC model: int16 ``[n_q, frames]``, or SNAC's list of
    int16 ``[frames_i]`` levels. ``FamilyCodec.encode_items``: each item's codes are exactly those of
    ``FamilyCodec.encode`` of that item alone (the audio is already at the model's rate)."""
    out = codec.encode_items([torch.from_numpy(a) for a in audio], codec.sample_rate, n_q)
    if codec.family == "snac":
        return [([lv.numpy().astype(np.int16) for lv in c], None) for c in out]
    return [(c.numpy().astype(np.int16), None) for c in out]


def _encode_group(codec: CorpusModel, audio: list[np.ndarray], n_q: int, lstm_batch: int) -> list[tuple]:
    """(codes int16 [n_q, frames], scales float32 [segments] or None) per item, through the engine
    (:meth:`rvqkit.Codec.engine`; a family model's ``encode_items``); halves the batch on CUDA
    out-of-memory."""
    try:
        if not isinstance(codec, Codec):
            return _encode_family(codec, audio, n_q)
        results = codec.engine(lstm_batch).encode([torch.from_numpy(a) for a in audio], n_q)
    except torch.cuda.OutOfMemoryError:
        if len(audio) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(audio) // 2
        return _encode_group(codec, audio[:half], n_q, lstm_batch) + _encode_group(
            codec, audio[half:], n_q, lstm_batch
        )
    return [
        (
            r.codes.numpy().astype(np.int16),
            None if r.scales is None else r.scales.numpy().astype(np.float32),
        )
        for r in results
    ]


def _groups(batches: list[list[int]], codec: CorpusModel, lstm_batch: int) -> Iterator[list[int]]:
    """Batches as engine calls. On CPU a batch runs as groups of ``lstm_batch`` items (neighbours in
    length, so their slots free at about the same time): the same codes (an item's codes do not depend
    on its batch), with results, and progress, after each group rather than after the whole batch. On a
    GPU the batches run whole."""
    if codec.device.type != "cpu":
        yield from batches
        return
    step = max(1, lstm_batch)
    for batch in batches:
        for i in range(0, len(batch), step):
            yield batch[i : i + step]


def iter_encode(
    codec: CorpusModel,
    loaded: Sequence[Loaded],
    bandwidth: float | None,
    max_samples: int,
    lstm_batch: int,
    n_q: int | None = None,
) -> Iterator[list[Result]]:
    """Results for ``loaded``, a list per model call (errors first, then calls in length order).
    ``lstm_batch``: see :data:`CPU_LSTM_BATCH` (an item's codes do not depend on its batch).
    ``n_q`` (codebooks) when given, else that of ``bandwidth`` in kbps (see
    :func:`~rvqkit.corpus.models.resolve_n_q`).

    Items with a ``reason`` pass through as errors; an item the model fails on becomes an
    ``encode_failed`` error (the batch is retried item by item first)."""
    errors = [
        Result(it.index, it.sample_rate, it.channels, it.num_samples, reason=it.reason, message=it.message)
        for it in loaded
        if it.reason is not None or it.audio is None
    ]
    if errors:
        yield errors
    good = [it for it in loaded if it.reason is None and it.audio is not None]
    lengths = [it.audio.shape[-1] for it in good]  # type: ignore[union-attr]  # good: audio loaded
    if n_q is None:
        n_q = resolve_n_q(codec, bandwidth, None)[0]
    for batch in _groups(plan_batches(lengths, max_samples), codec, lstm_batch):
        items = [good[b] for b in batch]
        audio = [it.audio for it in items]
        try:
            out = _encode_group(codec, audio, n_q, lstm_batch)  # type: ignore[arg-type]  # good: audio loaded
        except Exception:  # one failing call must not stop the job; retry item by item
            out = []
            for a in audio:
                try:
                    out.extend(_encode_group(codec, [a], n_q, lstm_batch))  # type: ignore[list-item]  # loaded
                except Exception as e:
                    out.append((None, f"{type(e).__name__}: {e}"))
        results = []
        for it, (c, s) in zip(items, out, strict=True):
            r = Result(it.index, it.sample_rate, it.channels, it.num_samples)
            if c is None:
                r.reason, r.message = "encode_failed", str(s)
            else:
                r.codes, r.scales = c, s
                r.model_samples = int(it.audio.shape[-1])  # type: ignore[union-attr]  # good: audio loaded
            results.append(r)
        yield results


def encode_loaded(
    codec: CorpusModel,
    loaded: Sequence[Loaded],
    bandwidth: float | None,
    max_samples: int,
    lstm_batch: int = CPU_LSTM_BATCH,
    n_q: int | None = None,
) -> list[Result]:
    """Results for ``loaded``, in the same order (see :func:`iter_encode`)."""
    batches = iter_encode(codec, loaded, bandwidth, max_samples, lstm_batch, n_q)
    by_index = {r.index: r for batch in batches for r in batch}
    return [by_index[it.index] for it in loaded]
