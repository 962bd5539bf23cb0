"""Meta's ``.ecdc`` compressed-audio files: read and write them, with or without LM entropy coding.

High level: :func:`compress` (audio → ``.ecdc`` bytes) and :func:`decompress` (bytes or file →
audio); for files of any length in bounded memory, :func:`compress_file` (audio file → ``.ecdc``,
block by block) and :func:`decompress_file` (``.ecdc`` → audio file, block by block). Lower level: :func:`write_ecdc` / :func:`read_ecdc` for :class:`~rvqkit.Encoded` values, and
:class:`EcdcWriter` / :class:`EcdcReader` for frame-by-frame streams. Errors: :class:`BitstreamError`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TypeVar

import numpy as np
import torch

from ..audio import AudioWriter
from ..chunked import DEFAULT_BLOCK_SECONDS, Progress, _encode_packets, model_length, read_blocks
from ..codec import DEFAULT_BANDWIDTH, AudioInput, Codec
from ..errors import AudioError, WeightsError
from ..lm import EntropyLM, find_lm, load_lm, torch_threads
from ..stream import CodePacket
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
    "compress_file",
    "compress_to_file",
    "decompress",
    "decompress_file",
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
            raise BitstreamError(f"cannot open {data}: {e}") from e
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


T = TypeVar("T")


def _threaded(items: Iterator[T], threads: int | None) -> Iterator[T]:
    """``items``, each produced on ``threads`` torch threads (the LM's work), the caller's work between
    them on the default count."""
    while True:
        with torch_threads(threads):
            item = next(items, None)
        if item is None:
            return
        yield item


def compress_file(
    fileobj: IO[bytes],
    codec: Codec,
    path: str | os.PathLike[str],
    bandwidth: float = DEFAULT_BANDWIDTH,
    lm: EntropyLM | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
) -> int:
    """Encode the audio file ``path`` block by block (memory bounded whatever its length) and write it
    to ``fileobj`` as ``.ecdc``, entropy-coded with ``lm`` if given (on ``threads`` torch threads). The
    bytes are :func:`compress`'s of the whole file. Returns the length in samples at the model rate."""
    length = model_length(path, codec)  # the header comes first, so the length is needed before the codes
    writer = EcdcWriter(fileobj, codec.name, codec.n_q_for(bandwidth), length, lm)
    samples = 0
    for packet, samples_in, _ in _encode_packets(
        codec, read_blocks(path, codec, block_seconds), bandwidth, progress
    ):
        samples = samples_in
        with torch_threads(threads if lm is not None else None):
            if codec.config.segment_length is None:
                if packet.num_frames:
                    writer.write_frames(packet.codes[0])
                continue
            assert packet.scales is not None or not packet.segment_frames
            f0 = 0
            for i, nf in enumerate(packet.segment_frames):
                writer.begin_segment(float(packet.scales[0, i]))  # type: ignore[index]
                writer.write_frames(packet.codes[0, :, f0 : f0 + nf])
                f0 += nf
    if samples != length:
        raise AudioError(
            f"{path}: its header declares {length} samples at the model rate, it holds {samples}"
        )
    with torch_threads(threads if lm is not None else None):
        writer.close()
    return length


def _packets(codec: Codec, chunks: Iterator[FrameChunk], block_frames: int) -> Iterator[CodePacket]:
    """Decoder packets from an ``.ecdc`` reader's chunks: at most ``block_frames`` frames each (24 kHz),
    or whole 1 s segments with their scales (48 kHz)."""
    if codec.config.segment_length is None:
        for c in chunks:
            for f in range(0, c.codes.shape[1], block_frames):
                yield CodePacket(c.codes[None, :, f : f + block_frames])
        return
    parts: list[torch.Tensor] = []
    current: FrameChunk | None = None
    for c in chunks:
        if current is not None and c.segment != current.segment:
            yield _segment_packet(parts, current)
            parts = []
        current = c
        parts.append(c.codes)
    if current is not None:
        yield _segment_packet(parts, current)


def _segment_packet(parts: list[torch.Tensor], chunk: FrameChunk) -> CodePacket:
    codes = torch.cat(parts, dim=1)
    assert chunk.scale is not None
    return CodePacket(codes[None], torch.tensor([[chunk.scale]], dtype=torch.float32), [codes.shape[1]])


def decompress_file(
    fileobj: IO[bytes],
    codec: Codec,
    out: str | os.PathLike[str],
    lm: EntropyLM | None = None,
    threads: int | None = None,
    already_read: bytes = b"",
    overwrite: bool = False,
    progress: Progress | None = None,
    block_frames: int = 375,
) -> int:
    """Decode an ``.ecdc`` stream to the audio file ``out`` (WAV/FLAC) block by block: memory bounded
    whatever its length; the samples are :func:`decompress`'s. ``lm``/``threads`` as in
    :func:`decompress`; ``already_read`` as in :func:`iter_chunks`. Returns the samples written."""
    reader = EcdcReader(lm)
    chunks = iter_chunks(fileobj, already_read=already_read, reader=reader)
    first = next(_threaded(chunks, threads), None)  # reads the header
    header = reader.header
    assert header is not None
    if header.model != codec.name:
        raise BitstreamError(f"this .ecdc file was made by {header.model}; the model given is {codec.name}")
    dec = codec.stream_decoder(length=header.audio_length)

    def all_chunks() -> Iterator[FrameChunk]:
        if first is not None:
            yield first
        yield from _threaded(chunks, threads)

    with AudioWriter(out, codec.sample_rate, codec.channels, overwrite) as w:
        for packet in _packets(codec, all_chunks(), block_frames):
            w.write(dec.push(packet)[0])
            if progress:
                progress(dec.samples_out / codec.sample_rate)
        w.write(dec.flush()[0])
    return dec.samples_out
