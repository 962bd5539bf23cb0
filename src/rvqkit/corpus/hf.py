"""Stay inside Hugging Face ``datasets``: add a codes column to a ``Dataset`` with a batched ``map``."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..codec import Codec
from ..errors import AudioError
from .encoding import CPU_LSTM_BATCH, auto_batch_samples, encode_loaded
from .items import CorpusError
from .loading import LoadSpec, load_item
from .sources import find_audio_column, undecoded


def encode_dataset(
    dataset: Any,
    codec: Codec,
    bandwidth: float = 6.0,
    *,
    audio_column: str | None = None,
    codes_column: str = "codes",
    batch_size: int = 16,
    batch_seconds: float | None = None,
    lstm_batch: int = CPU_LSTM_BATCH,
    **map_kwargs: Any,
) -> Any:
    """``dataset`` with ``codes_column`` (``[n_q][frames]`` int16 lists), ``num_frames`` and, for the
    48 kHz model, ``scales`` added, computed by a batched ``Dataset.map``.

    The audio column is read undecoded and decoded with soundfile (no torchcodec needed); it is kept
    as it was. Each item's codes equal ``codec.encode(item, ..., lstm_batch=lstm_batch)`` of that item
    alone (see :func:`rvqkit.corpus.encode_corpus` for ``lstm_batch``). An unreadable, empty or
    NaN item raises :class:`~rvqkit.errors.AudioError` naming its row. Other keyword arguments go to
    ``Dataset.map`` (e.g. ``desc``, ``cache_file_name``; a fingerprint of the model and settings is
    set for caching).
    """
    if not isinstance(codec, Codec):
        raise CorpusError(
            f"encode_dataset runs EnCodec (a Codec) only for now, got {type(codec).__name__}; encode Mimi, "
            "DAC and SNAC corpora with encode_corpus"
        )
    if lstm_batch < 1:
        raise CorpusError(f"lstm_batch must be at least 1, got {lstm_batch}")
    column = find_audio_column(dataset, audio_column)
    original = dataset.features[column]
    n_q = codec.n_q_for(bandwidth)
    spec = LoadSpec(codec.sample_rate, codec.channels)
    max_samples = auto_batch_samples(codec, batch_seconds)

    def encode_batch(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        loaded = []
        for i, value in zip(indices, batch[column], strict=True):
            payload = (value.get("bytes") or value.get("path") or b"") if value else b""
            loaded.append(load_item(i, payload, spec))
        results = encode_loaded(codec, loaded, bandwidth, max_samples, lstm_batch)
        for r in results:
            if not r.ok:
                raise AudioError(f"row {r.index}: {r.reason} ({r.message})")
        out: dict[str, list] = {
            codes_column: [r.codes.tolist() for r in results],  # type: ignore[union-attr]  # ok results
            "num_frames": [int(r.codes.shape[-1]) for r in results],  # type: ignore[union-attr]  # ok results
        }
        if codec.config.normalize:
            out["scales"] = [np.asarray(r.scales).tolist() for r in results]
        return out

    fingerprint = hashlib.sha256(
        f"{dataset._fingerprint}|{codec.name}|{codec.weights_sha256}|{n_q}|{lstm_batch > 1}|{column}|{codes_column}".encode()
    ).hexdigest()[:32]
    map_kwargs.setdefault("new_fingerprint", fingerprint)
    source = undecoded(dataset, column)
    map_kwargs.setdefault("features", _features(source.features, codes_column, codec.config.normalize))
    out = source.map(encode_batch, batched=True, batch_size=batch_size, with_indices=True, **map_kwargs)
    return out.cast_column(column, original)


def _features(features: Any, codes_column: str, scales: bool) -> Any:
    """The input features plus compact types for the new columns (int16 codes, not int64)."""
    import datasets

    list_type = getattr(datasets, "List", None) or datasets.Sequence  # List since datasets 4
    out = features.copy()
    out[codes_column] = list_type(list_type(datasets.Value("int16")))
    out["num_frames"] = datasets.Value("int32")
    if scales:
        out["scales"] = list_type(datasets.Value("float32"))
    return out
