"""Meta's ``.ecdc`` compressed-audio files: read and write them, with or without LM entropy coding.

High level: :func:`compress` (audio → ``.ecdc`` bytes) and :func:`decompress` (bytes or file →
audio). Lower level: :func:`write_ecdc` / :func:`read_ecdc` for :class:`~rvqkit.Encoded` values, and
:class:`EcdcWriter` / :class:`EcdcReader` for frame-by-frame streams. Errors: :class:`BitstreamError`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO

import numpy as np
import torch

from ..codec import DEFAULT_BANDWIDTH, AudioInput, Codec
from ..errors import WeightsError
from ..lm import EntropyLM, find_lm, load_lm, torch_threads
from .ecdc import (
    MAGIC,
    BitstreamError,
    EcdcHeader,
    EcdcReader,
    EcdcWriter,
    FrameChunk,
    encoded_from_chunks,
    follow_ecdc,
    iter_chunks,
    read_ecdc,
    read_header,
    write_ecdc,
)

LMSource = EntropyLM | str | os.PathLike[str] | None

__all__ = [
    "MAGIC",
    "BitstreamError",
    "EcdcHeader",
    "EcdcReader",
    "EcdcWriter",
    "FrameChunk",
    "compress",
    "compress_to_file",
    "decompress",
    "encoded_from_chunks",
    "follow_ecdc",
    "iter_chunks",
    "read_ecdc",
    "read_header",
    "resolve_lm",
    "write_ecdc",
]


def resolve_lm(lm: LMSource, model: str, near: str | os.PathLike[str] | None = None) -> EntropyLM:
    """An :class:`~rvqkit.lm.EntropyLM` for ``model`` from an LM, a checkpoint path, or a local search
    (beside ``near``, ``$RVQKIT_LM_DIR``, torch's hub cache; see :func:`rvqkit.lm.find_lm`)."""
    if isinstance(lm, EntropyLM):
        return lm
    if lm is None:
        found = find_lm(model, near)
        if found is None:
            from ..lm import lm_checkpoint_name

            raise WeightsError(
                f"the entropy-coding LM for {model} ({lm_checkpoint_name(model)}) was not found beside the "
                "model weights, in $RVQKIT_LM_DIR or in torch's hub cache; give its path (--lm-model PATH)"
            )
        lm = found
    return load_lm(lm, model)


def compress_to_file(
    fileobj: IO[bytes],
    codec: Codec,
    audio: AudioInput,
    sample_rate: int,
    bandwidth: float = DEFAULT_BANDWIDTH,
    use_lm: bool = False,
    lm: LMSource = None,
    threads: int | None = None,
) -> None:
    """Encode one signal (``[samples]`` or ``[channels, samples]``, Hz ``sample_rate``) at ``bandwidth``
    kbps and write it as ``.ecdc``; ``use_lm`` entropy-codes it (about 20-30 % smaller with Meta's LM).
    ``threads``: torch threads while LM-coding (the bytes depend on it; see ``rvqkit.lm.torch_threads``)."""
    model_lm = resolve_lm(lm, codec.name) if use_lm else None
    if isinstance(audio, (np.ndarray, torch.Tensor)) and audio.ndim == 3 and audio.shape[0] != 1:
        raise BitstreamError(f".ecdc holds one signal; got a batch of {audio.shape[0]}")
    encoded = codec.encode(audio, sample_rate, bandwidth=bandwidth)
    with torch_threads(threads if use_lm else None):
        write_ecdc(fileobj, encoded, lm=model_lm)


def compress(
    codec: Codec,
    audio: AudioInput,
    sample_rate: int,
    bandwidth: float = DEFAULT_BANDWIDTH,
    use_lm: bool = False,
    lm: LMSource = None,
    threads: int | None = None,
) -> bytes:
    """Like :func:`compress_to_file`, returning the ``.ecdc`` bytes."""
    buf = io.BytesIO()
    compress_to_file(buf, codec, audio, sample_rate, bandwidth, use_lm, lm, threads)
    return buf.getvalue()


def decompress(
    data: bytes | IO[bytes] | str | os.PathLike[str],
    codec: Codec,
    lm: LMSource = None,
    threads: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Audio ``[channels, samples]`` (float32, model rate) and the rate in Hz from ``.ecdc`` bytes, a
    binary file object or a path. The file must have been made by ``codec``'s model; entropy-coded
    files need the LM (``lm``: an :class:`~rvqkit.lm.EntropyLM` or checkpoint path; else searched),
    run on ``threads`` torch threads if given (as many as when the file was written)."""
    if isinstance(data, (bytes, bytearray)):
        fo: IO[bytes] = io.BytesIO(data)
    elif isinstance(data, (str, os.PathLike)):
        try:
            fo = open(Path(data), "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise BitstreamError(f"cannot open {data}: {e}") from None
    else:
        fo = data
    try:
        header, raw = read_header(fo)
        if header.model != codec.name:
            raise BitstreamError(
                f"this .ecdc file was made by {header.model}; the model given is {codec.name}"
            )
        model_lm = resolve_lm(lm, header.model) if header.use_lm else None
        with torch_threads(threads if header.use_lm else None):
            encoded = read_ecdc(fo, lm=model_lm, already_read=raw)
    finally:
        if isinstance(data, (str, os.PathLike)):
            fo.close()
    audio = codec.decode(encoded)
    return audio[0, :, : int(encoded.lengths[0])], codec.sample_rate
