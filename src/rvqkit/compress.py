"""Audio to Meta's ``.ecdc`` files and back: the codec, the entropy-coding LM and the container joined.

The container itself (:mod:`rvqkit.bitstream`) is a pure format that knows neither the network nor the
LM's weights; this module brings them together, for the CLI (``rvqkit compress`` / ``decompress``), the
server's ``/v1/compress`` and ``/v1/decompress`` and Python users:

- in memory: :func:`compress` (audio → bytes), :func:`decompress` (bytes, file object or path → audio),
  :func:`ecdc_bytes` (codes → bytes), :func:`read_codes` (bytes → codes, model and LM checked);
- block by block, for files of any length in bounded memory: :func:`compress_file` /
  :func:`decompress_file` (to and from file objects), and :func:`compress_path` /
  :func:`decompress_path` (to and from paths: the output is whole or absent, never half written).

Progress callbacks get the seconds of audio done. LM-coded bytes depend on the torch thread count the LM
runs on (``threads``; see :func:`rvqkit.lm.torch_threads`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TypeVar

import numpy as np
import torch

from .atomic import write_atomic
from .audio import AudioWriter
from .bitstream import (
    BitstreamError,
    EcdcHeader,
    EcdcReader,
    EcdcWriter,
    FrameChunk,
    iter_chunks,
    read_ecdc,
    read_header,
    write_ecdc,
)
from .chunked import (
    DECODE_BLOCK_FRAMES,
    DEFAULT_BLOCK_SECONDS,
    Progress,
    _encode_packets,
    model_length,
    read_blocks,
)
from .codec import DEFAULT_BANDWIDTH, AudioInput, Codec
from .encoded import Encoded
from .errors import AudioError, WeightsError, os_error
from .lm import EntropyLM, find_lm, lm_checkpoint_name, load_lm, torch_threads
from .stream import CodePacket

LMSource = EntropyLM | str | os.PathLike[str] | None
Source = bytes | bytearray | IO[bytes] | str | os.PathLike[str]

__all__ = [
    "LMSource",
    "check_model",
    "compress",
    "compress_file",
    "compress_path",
    "compress_to_file",
    "decompress",
    "decompress_file",
    "decompress_path",
    "ecdc_bytes",
    "ecdc_header",
    "read_codes",
    "resolve_lm",
]


def resolve_lm(lm: LMSource, model: str, near: str | os.PathLike[str] | None = None) -> EntropyLM:
    """An :class:`~rvqkit.lm.EntropyLM` for ``model`` from an LM, a checkpoint path, or a local search
    (beside ``near``, ``$RVQKIT_LM_DIR``, torch's hub cache; see :func:`rvqkit.lm.find_lm`)."""
    if isinstance(lm, EntropyLM):
        return lm
    if lm is None:
        found = find_lm(model, near)
        if found is None:
            raise WeightsError(
                f"the entropy-coding LM for {model} ({lm_checkpoint_name(model)}) was not found beside the "
                "model weights, in $RVQKIT_LM_DIR or in torch's hub cache; give its path as lm=PATH"
            )
        lm = found
    return load_lm(lm, model)


def check_model(header: EcdcHeader, codec: Codec, what: str = "this .ecdc file") -> None:
    """Refuse a file (``what``, for the message) made by another model than ``codec``'s."""
    if header.model != codec.name:
        raise BitstreamError(f"{what} was made by {header.model}; the model given is {codec.name}")


# -- in memory -------------------------------------------------------------------------------------------
def ecdc_bytes(encoded: Encoded, lm: EntropyLM | None = None, threads: int | None = None) -> bytes:
    """The ``.ecdc`` bytes of one encoded signal (batch of 1), entropy-coded with ``lm`` if given (on
    ``threads`` torch threads)."""
    buf = io.BytesIO()
    with torch_threads(threads if lm is not None else None):
        write_ecdc(buf, encoded, lm=lm)
    return buf.getvalue()


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
    fileobj.write(compress(codec, audio, sample_rate, bandwidth, use_lm, lm, threads))


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
    model_lm = resolve_lm(lm, codec.name) if use_lm else None
    if isinstance(audio, (np.ndarray, torch.Tensor)) and audio.ndim == 3 and audio.shape[0] != 1:
        raise BitstreamError(f".ecdc holds one signal; got a batch of {audio.shape[0]}")
    return ecdc_bytes(codec.encode(audio, sample_rate, bandwidth=bandwidth), model_lm, threads)


def read_codes(data: Source, codec: Codec, lm: LMSource = None, threads: int | None = None) -> Encoded:
    """The codes of ``.ecdc`` bytes, a binary file object or a path, checked to be made by ``codec``'s
    model; entropy-coded files need the LM (``lm``: an :class:`~rvqkit.lm.EntropyLM` or checkpoint path;
    else searched), run on ``threads`` torch threads if given (as many as when the file was written)."""
    if isinstance(data, (bytes, bytearray)):
        return _read_codes(io.BytesIO(data), codec, lm, threads)
    if isinstance(data, (str, os.PathLike)):
        try:
            f = open(Path(data), "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise BitstreamError(f"cannot open {data}: {e}") from e
        with f:
            return _read_codes(f, codec, lm, threads)
    return _read_codes(data, codec, lm, threads)


def _read_codes(fo: IO[bytes], codec: Codec, lm: LMSource, threads: int | None) -> Encoded:
    header, raw = read_header(fo)
    check_model(header, codec)
    model_lm = resolve_lm(lm, header.model) if header.use_lm else None
    with torch_threads(threads if header.use_lm else None):
        return read_ecdc(fo, lm=model_lm, already_read=raw)


def decompress(
    data: Source, codec: Codec, lm: LMSource = None, threads: int | None = None
) -> tuple[torch.Tensor, int]:
    """Audio ``[channels, samples]`` (float32, model rate) and the rate in Hz from ``.ecdc`` bytes, a
    binary file object or a path; ``lm`` and ``threads`` as in :func:`read_codes`."""
    encoded = read_codes(data, codec, lm, threads)
    audio = codec.decode(encoded)
    return audio[0, :, : int(encoded.lengths[0])], codec.sample_rate


# -- block by block --------------------------------------------------------------------------------------
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
    lm_threads = threads if lm is not None else None
    samples = 0
    for packet, samples_in, _ in _encode_packets(
        codec, read_blocks(path, codec, block_seconds), bandwidth, progress
    ):
        samples = samples_in
        with torch_threads(lm_threads):
            if codec.config.segment_length is None:
                if packet.num_frames:
                    writer.write_frames(packet.codes[0])
                continue
            assert packet.scales is not None or not packet.segment_frames
            f0 = 0
            for i, nf in enumerate(packet.segment_frames):
                writer.begin_segment(float(packet.scales[0, i]))  # type: ignore[index]  # 48 kHz: scales set
                writer.write_frames(packet.codes[0, :, f0 : f0 + nf])
                f0 += nf
    if samples != length:
        raise AudioError(
            f"{path}: its header declares {length} samples at the model rate, it holds {samples}"
        )
    with torch_threads(lm_threads):
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
    block_frames: int = DECODE_BLOCK_FRAMES,
) -> int:
    """Decode an ``.ecdc`` stream to the audio file ``out`` (WAV/FLAC) block by block: memory bounded
    whatever its length; the samples are :func:`decompress`'s. ``lm``/``threads`` as in
    :func:`decompress`; ``already_read`` as in :func:`~rvqkit.bitstream.iter_chunks`. Returns the
    samples written."""
    reader = EcdcReader(lm)
    chunks = iter_chunks(fileobj, already_read=already_read, reader=reader)
    first = next(_threaded(chunks, threads), None)  # reads the header
    header = reader.header
    assert header is not None
    check_model(header, codec)
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


# -- paths -----------------------------------------------------------------------------------------------
def compress_path(
    codec: Codec,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    bandwidth: float = DEFAULT_BANDWIDTH,
    lm: EntropyLM | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
) -> int:
    """:func:`compress_file` from the audio file ``input`` to the ``.ecdc`` file ``output``, written to a
    temporary file beside it and renamed into place (:func:`rvqkit.atomic.write_atomic`): a failed or
    killed run leaves no half file and keeps an existing one. The caller decides whether ``output`` may
    be replaced. Returns the length in samples at the model rate."""
    out = Path(output)
    length = 0

    def write(tmp: Path) -> None:
        nonlocal length
        with open(tmp, "wb") as f:
            length = compress_file(f, codec, input, bandwidth, lm, threads, progress, block_seconds)

    try:
        write_atomic(out, write)
    except OSError as e:
        raise os_error(e, out, output=True) from e
    return length


def ecdc_header(path: str | os.PathLike[str]) -> EcdcHeader:
    """The header of the ``.ecdc`` file ``path`` (which model to load, whether it needs the LM)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise os_error(e, path, output=False) from e
    with f:
        return read_header(f)[0]


def decompress_path(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    codec: Codec,
    lm: LMSource = None,
    threads: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    block_frames: int = DECODE_BLOCK_FRAMES,
) -> tuple[EcdcHeader, int]:
    """:func:`decompress_file` from the ``.ecdc`` file ``input`` (made by ``codec``'s model) to the audio
    file ``output`` (WAV/FLAC, renamed into place when whole; an existing one is kept unless
    ``overwrite``). An entropy-coded file takes ``lm`` as :func:`resolve_lm` does. Returns the file's
    header and the samples written."""
    try:
        f = open(input, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise os_error(e, input, output=False) from e
    with f:
        header, raw = read_header(f)
        check_model(header, codec, str(input))
        model_lm = resolve_lm(lm, header.model) if header.use_lm else None
        n = decompress_file(f, codec, output, model_lm, threads, raw, overwrite, progress, block_frames)
    return header, n
