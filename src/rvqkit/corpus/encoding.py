"""Run the model on loaded items: sort by length, cut into batches, encode, split the codes per item.

:meth:`rvqkit.Codec.encode` takes a list of items of different lengths: on CPU the convolutions run
item by item and the encoder's LSTM over :data:`CPU_LSTM_BATCH` items at once (neighbours in length, so
little padding); on a GPU items of *equal* length share a call. Sorting by length puts similar lengths
together; the batch budget bounds memory. For segmented models (48 kHz) on a GPU the 1 s segments are
batched instead, so all full segments of a batch share one call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..codec import Codec
from ..framing import segment_bounds
from ..precision import precision_scope
from .items import Loaded, Result

#: Audio seconds per model call on CPU: enough for 8 items of 30 s to share the LSTM's calls
#: (:data:`CPU_LSTM_BATCH`). The convolutions still run item by item (in 2 s blocks for long items), so a
#: call holds the audio plus the LSTM's input and output, 2 x 512 floats per frame (about 55 MB).
CPU_BATCH_SECONDS = 240.0
#: On CPU, items (or 48 kHz segments) whose encoder LSTM runs as one batch (see
#: :meth:`rvqkit.model.EncodecModel.embed_items`); 1 runs each item alone, as ``Codec.encode`` does by
#: default. Measured per item and LSTM step: 36 us alone, 10 us in a batch of 8, 9.8 us in one of 16.
CPU_LSTM_BATCH = 8
GPU_BYTES_PER_SAMPLE = 2048  # rough peak activation memory per input sample of the encoder (float32)


def auto_batch_samples(codec: Codec, batch_seconds: float | None = None) -> int:
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


def _encode_group(codec: Codec, audio: list[np.ndarray], bandwidth: float, lstm_batch: int) -> list[tuple]:
    """(codes int16 [n_q, frames], scales float32 [segments] or None) per item; halves the batch on
    CUDA out-of-memory."""
    try:
        if codec.config.segment_length is not None and codec.device.type != "cpu":
            return _encode_segments(codec, audio, codec.n_q_for(bandwidth))
        enc = codec.encode(audio, codec.sample_rate, bandwidth=bandwidth, lstm_batch=lstm_batch)
    except torch.cuda.OutOfMemoryError:
        if len(audio) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(audio) // 2
        return _encode_group(codec, audio[:half], bandwidth, lstm_batch) + _encode_group(
            codec, audio[half:], bandwidth, lstm_batch
        )
    out = []
    codes = enc.codes.numpy()
    for i in range(enc.batch_size):
        c = codes[i, :, : int(enc.frame_lengths[i])].astype(np.int16)
        s = None
        if enc.scales is not None:
            n_seg = len(segment_bounds(codec.config, int(enc.lengths[i])))
            s = enc.scales[i, :n_seg].numpy().astype(np.float32)
        out.append((c, s))
    return out


@torch.inference_mode()
def _encode_segments(codec: Codec, audio: list[np.ndarray], n_q: int) -> list[tuple]:
    """Segmented models (48 kHz: 1 s segments) on a GPU: segments of *equal length* share one model
    call even when they come from items of different lengths (on CPU, ``Codec.encode`` batches only the
    LSTM, across segments: see ``EncodecModel.embed_items``). Segments are encoded independently of each
    other, so this is exactly :meth:`EncodecModel.encode` per item (the same embed_segment + quantizer
    calls), with the segments of many items batched."""
    cfg = codec.config
    pieces: dict[int, list[tuple[int, int, int, int]]] = defaultdict(
        list
    )  # length -> (item, seg, start, end)
    bounds = [segment_bounds(cfg, a.shape[-1]) for a in audio]
    for i, b in enumerate(bounds):
        for j, (start, end) in enumerate(b):
            pieces[end - start].append((i, j, start, end))
    codes: list[list] = [[None] * len(b) for b in bounds]
    scales: list[list] = [[None] * len(b) for b in bounds]
    for group in pieces.values():
        x = torch.stack([torch.from_numpy(audio[i][:, s:e]) for i, _, s, e in group]).to(codec.device)
        with precision_scope(codec.precision, codec.device):
            emb, scale = codec.model.embed_segment(x)
            c = codec.model.quantizer.encode(emb, n_q).cpu().numpy().astype(np.int16)
        for row, (i, j, _, _) in enumerate(group):
            codes[i][j] = c[row]
            scales[i][j] = None if scale is None else float(scale[row, 0])
    return [
        (
            np.concatenate(cs, axis=-1),
            None if cfg.normalize is False else np.asarray(sc, dtype=np.float32),
        )
        for cs, sc in zip(codes, scales, strict=True)
    ]


def _calls(batches: list[list[int]], codec: Codec, lstm_batch: int) -> Iterator[list[int]]:
    """Batches as model calls. On CPU a batch runs as calls of ``lstm_batch`` items (neighbours in
    length, so the same items share the LSTM as in one call of the whole batch; an item's codes do not
    depend on that anyway): the same work, with a result, and progress, after each group of items
    rather than after the whole batch. On a GPU the batches run whole (items of equal length share a
    call)."""
    if codec.device.type != "cpu":
        yield from batches
        return
    step = max(1, lstm_batch)
    for batch in batches:
        for i in range(0, len(batch), step):
            yield batch[i : i + step]


def iter_encode(
    codec: Codec,
    loaded: Sequence[Loaded],
    bandwidth: float,
    max_samples: int,
    lstm_batch: int,
) -> Iterator[list[Result]]:
    """Results for ``loaded``, a list per model call (errors first, then calls in length order).
    ``lstm_batch``: see :data:`CPU_LSTM_BATCH` (an item's codes do not depend on its batch).

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
    lengths = [it.audio.shape[-1] for it in good]  # type: ignore[union-attr]
    for batch in _calls(plan_batches(lengths, max_samples), codec, lstm_batch):
        items = [good[b] for b in batch]
        audio = [it.audio for it in items]
        try:
            out = _encode_group(codec, audio, bandwidth, lstm_batch)  # type: ignore[arg-type]
        except Exception:  # one failing call must not stop the job; retry item by item
            out = []
            for a in audio:
                try:
                    out.extend(_encode_group(codec, [a], bandwidth, lstm_batch))  # type: ignore[list-item]
                except Exception as e:
                    out.append((None, f"{type(e).__name__}: {e}"))
        results = []
        for it, (c, s) in zip(items, out, strict=True):
            r = Result(it.index, it.sample_rate, it.channels, it.num_samples)
            if c is None:
                r.reason, r.message = "encode_failed", str(s)
            else:
                r.codes, r.scales = c, s
                r.model_samples = int(it.audio.shape[-1])  # type: ignore[union-attr]
            results.append(r)
        yield results


def encode_loaded(
    codec: Codec,
    loaded: Sequence[Loaded],
    bandwidth: float,
    max_samples: int,
    lstm_batch: int = CPU_LSTM_BATCH,
) -> list[Result]:
    """Results for ``loaded``, in the same order (see :func:`iter_encode`)."""
    batches = iter_encode(codec, loaded, bandwidth, max_samples, lstm_batch)
    by_index = {r.index: r for batch in batches for r in batch}
    return [by_index[it.index] for it in loaded]
