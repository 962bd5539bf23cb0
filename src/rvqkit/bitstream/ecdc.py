"""Meta's ``.ecdc`` container: segment framing, writer and reader (whole files or frame by frame).

After the header (:mod:`.header`), per segment (the 24 kHz model: one segment, the whole signal;
48 kHz: 1 s segments)::

    [float32 big-endian scale]          48 kHz model only (per-segment RMS)
    codes, time-major (all nc codebooks of frame t before frame t + 1), either
      - packed 10 bits each, LSB first, the last byte zero-padded   ("lm": false), or
      - arithmetic-coded with the LM, reset at each segment, padded ("lm": true)

A segment's frame count follows from the header's length: ``ceil(segment samples / 320)``. The LM is
any :class:`~.predictor.Predictor`.

:class:`EcdcWriter` writes frames as they come (a live stream), :class:`EcdcReader` takes bytes as
they arrive and hands back every frame that is complete (a growing file), and :func:`write_ecdc` /
:func:`read_ecdc` do whole :class:`~rvqkit.Encoded` values. Every problem with a file is a
:class:`BitstreamError`; nothing read from a file sizes an allocation before the bytes are there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import torch

from ..config import PRESETS, CodecConfig
from ..encoded import Encoded
from .arith import ArithmeticDecoder, ArithmeticEncoder, ArithmeticError_, NeedMoreData, quantized_cdf
from .bitpack import BitPacker, BitReader
from .header import PREFIX, BitstreamError, EcdcHeader
from .predictor import Predictor, check_predictor

_SCALE = struct.Struct("!f")
READ_CHUNK = 1 << 16
MAX_CHUNK_FRAMES = 256  # LM-decoded frames per FrameChunk


# -- writing ---------------------------------------------------------------------------------------------
class EcdcWriter:
    """Writes an ``.ecdc`` stream frame by frame, bytes going out as soon as they are final.

    Args:
        fileobj: binary file object to write to (written in order; see ``audio_length``).
        model: ``encodec_24khz`` or ``encodec_48khz``.
        n_q: codebooks per frame.
        audio_length: samples at the model rate if known now (the header is then final and the bytes are
            exactly Meta's). ``None`` for a live stream: the header holds a placeholder that
            :meth:`close` fills in, which needs a seekable ``fileobj``.
        lm: the entropy-coding LM to use (``None``: 10-bit packing).

    Call :meth:`begin_segment` at each segment start (48 kHz: with its scale; 24 kHz has one segment,
    begun automatically), :meth:`write_frames` with codes ``[n_q, frames]`` any number of times, and
    :meth:`close` at the end.
    """

    def __init__(
        self,
        fileobj: IO[bytes],
        model: str,
        n_q: int,
        audio_length: int | None = None,
        lm: Predictor | None = None,
    ) -> None:
        self.fo = fileobj
        live = audio_length is None
        if not live:
            if (
                isinstance(audio_length, bool)
                or not isinstance(audio_length, (int, np.integer))
                or audio_length <= 0
            ):
                raise BitstreamError(
                    f"audio length must be a positive number of samples, got {audio_length!r}"
                )
            audio_length = int(audio_length)
        if isinstance(n_q, np.integer):
            n_q = int(n_q)
        self.header = EcdcHeader(model, 0 if audio_length is None else audio_length, n_q, lm is not None)
        if lm is not None:
            check_predictor(lm, self.header)
        self.lm = lm
        self._header_at: int | None = None
        if live:
            try:
                self._header_at = fileobj.tell()
            except (OSError, AttributeError) as e:
                raise BitstreamError(
                    "a live .ecdc stream (length not known yet) needs a seekable file"
                ) from e
        self.fo.write(self.header.to_bytes(live=live))
        self._plan = self.header.segment_frames()
        self._segment = -1
        self._frames_in_segment = 0
        self.frames_written = 0
        self._packer: BitPacker | None = None
        self._coder: ArithmeticEncoder | None = None
        self._lm_state: Any = None
        self._previous: torch.Tensor | None = None
        self.closed = False

    @property
    def config(self) -> CodecConfig:
        return self.header.config

    def _end_segment(self) -> None:
        if self._segment < 0:
            return
        if self._plan and self._frames_in_segment != self._plan[self._segment]:
            raise BitstreamError(
                f"segment {self._segment} got {self._frames_in_segment} frames, the length declares {self._plan[self._segment]}"
            )
        if self._coder is not None:
            self.fo.write(self._coder.finish())
        if self._packer is not None:
            self.fo.write(self._packer.flush())

    def begin_segment(self, scale: float | None = None) -> None:
        """Start the next segment; ``scale`` is its RMS (48 kHz model, required there, refused otherwise)."""
        if self.closed:
            raise BitstreamError("the .ecdc writer is closed")
        if self.config.normalize:
            if scale is None or not math.isfinite(scale) or scale <= 0:
                raise BitstreamError(
                    f"{self.header.model} segments need a positive finite scale, got {scale!r}"
                )
        elif scale is not None:
            raise BitstreamError(f"{self.header.model} segments have no scale")
        if self._plan and self._segment + 1 >= len(self._plan):
            raise BitstreamError(f"the declared length has {len(self._plan)} segments; no room for more")
        self._end_segment()
        self._segment += 1
        if scale is not None:
            self.fo.write(_SCALE.pack(scale))
        self._frames_in_segment = 0
        if self.lm is not None:
            self._coder = ArithmeticEncoder()
            self._lm_state = self.lm.initial_state()
            self._previous = None
        else:
            self._packer = BitPacker(self.config.bits_per_codebook)

    def write_frames(self, codes: torch.Tensor | np.ndarray) -> None:
        """Append code frames ``[n_q, frames]`` (int, < codebook size) to the current segment."""
        if self.closed:
            raise BitstreamError("the .ecdc writer is closed")
        codes = torch.as_tensor(codes).to(torch.long).cpu()
        if codes.ndim != 2 or codes.shape[0] != self.header.n_q:
            raise BitstreamError(f"codes must be [{self.header.n_q}, frames], got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.codebook_size):
            raise BitstreamError(f"codes out of range [0, {self.config.codebook_size})")
        if self._segment < 0:
            if self.config.normalize:
                raise BitstreamError(f"{self.header.model}: call begin_segment(scale) first")
            self.begin_segment()
        n = codes.shape[1]
        if self._plan and self._frames_in_segment + n > self._plan[self._segment]:
            raise BitstreamError(
                f"segment {self._segment} holds {self._plan[self._segment]} frames; {self._frames_in_segment + n} given"
            )
        if self.lm is None:
            assert self._packer is not None
            self.fo.write(self._packer.push(codes.t().numpy()))  # time-major
        else:
            self._encode_lm(codes)
        self._frames_in_segment += n
        self.frames_written += n

    def _encode_lm(self, codes: torch.Tensor) -> None:
        assert self.lm is not None and self._coder is not None and self._lm_state is not None
        k = torch.arange(codes.shape[0])
        for t in range(codes.shape[1]):
            probs, self._lm_state = self.lm.step(self._previous, self._lm_state, self.header.n_q)
            cdf = quantized_cdf(probs)  # [n_q, card], all codebooks at once
            frame = codes[:, t]
            highs = cdf[k, frame].tolist()
            lows = torch.where(frame > 0, cdf[k, (frame - 1).clamp(min=0)], 0).tolist()
            self._coder.encode_many(lows, highs)
            self._previous = frame
        self.fo.write(self._coder.take_bytes())

    def close(self, audio_length: int | None = None) -> None:
        """Finish the last segment; for a live stream, write the final ``audio_length`` into the header."""
        if self.closed:
            return
        if self._header_at is None:
            if self._segment != len(self._plan) - 1:
                raise BitstreamError(f"{self._segment + 1} of {len(self._plan)} segments written")
            self._end_segment()
        else:
            if audio_length is None:
                raise BitstreamError("a live .ecdc stream needs its audio length (samples) at close")
            try:  # a length beyond what a header may declare is a mismatch too
                final = dataclasses.replace(self.header, audio_length=int(audio_length))
            except BitstreamError:
                final = self.header
            plan = final.segment_frames()
            done = [*([None] * self._segment), self._frames_in_segment]
            if (
                final.live
                or len(plan) != len(done)
                or plan[-1] != done[-1]
                or self.frames_written != sum(plan)
            ):
                raise BitstreamError(
                    f"audio length {audio_length} samples does not match the {self.frames_written} frames written"
                )
            # The header goes first, so that a reader that sees the last bytes also sees the length.
            end = self.fo.tell()
            self.fo.seek(self._header_at)
            self.fo.write(final.to_bytes(live=True))
            self.fo.seek(end)
            self._plan = plan
            self._end_segment()
            self.header = final
        self.fo.flush()
        self.closed = True


def write_ecdc(fileobj: IO[bytes], encoded: Encoded, lm: Predictor | None = None) -> None:
    """Write one encoded signal (batch of 1) as ``.ecdc``; with ``lm``, entropy-coded."""
    if encoded.batch_size != 1:
        raise BitstreamError(f".ecdc holds one signal; got a batch of {encoded.batch_size}")
    if encoded.model not in PRESETS:
        raise BitstreamError(f".ecdc supports {', '.join(PRESETS)}, not {encoded.model!r}")
    header_len = int(encoded.lengths[0])
    writer = EcdcWriter(fileobj, encoded.model, encoded.n_q, header_len, lm)
    cfg = writer.config
    frames = writer.header.segment_frames()
    if sum(frames) != int(encoded.frame_lengths[0]) or encoded.codes.shape[-1] < sum(frames):
        raise BitstreamError(
            f"{header_len} samples need {sum(frames)} frames; the codes hold {int(encoded.frame_lengths[0])}"
        )
    if cfg.normalize and (encoded.scales is None or encoded.scales.shape[-1] < len(frames)):
        raise BitstreamError(f"{encoded.model} codes need {len(frames)} per-segment scales")
    f0 = 0
    for i, nf in enumerate(frames):
        scale = float(encoded.scales[0, i]) if cfg.normalize and encoded.scales is not None else None
        writer.begin_segment(scale)
        writer.write_frames(encoded.codes[0, :, f0 : f0 + nf])
        f0 += nf
    writer.close()


# -- reading ---------------------------------------------------------------------------------------------
@dataclass
class FrameChunk:
    """Frames decoded from a stream: codes ``[n_q, frames]`` of segment ``segment``, and its scale."""

    segment: int
    codes: torch.Tensor
    scale: float | None


class EcdcReader:
    """Decodes ``.ecdc`` bytes as they arrive (a growing file, a socket): :meth:`feed` returns the frames
    completed by the new bytes, :meth:`finish` checks that the stream ended where the header says.

    Only the bytes not yet decoded are kept. ``lm`` is needed for entropy-coded streams; a live file
    (``al`` still 0) learns its length with :meth:`set_audio_length` once the writer has filled it in.
    """

    def __init__(self, lm: Predictor | None = None) -> None:
        self._lm_given = lm
        self.lm: Predictor | None = None
        self._bits = BitReader()
        self.header: EcdcHeader | None = None
        self._meta_size: int | None = None
        self._plan: list[int] = []
        self._segment = -1
        self._in_segment = 0  # frames decoded in the current segment; -1 = segment not started
        self._scale: float | None = None
        self._decoder: ArithmeticDecoder | None = None
        self._lm_state: Any = None
        self._previous: torch.Tensor | None = None
        self._pending: tuple[list[list[int]], Any] | None = None  # next frame's CDFs and LM state
        self.frames_read = 0
        self.done = False

    # -- framing --------------------------------------------------------------------------------------
    def set_audio_length(self, audio_length: int) -> None:
        """Give the final length of a live stream (read back from its header once the writer closed)."""
        if self.header is None or not self.header.live:
            return
        final = dataclasses.replace(self.header, audio_length=audio_length)
        plan = final.segment_frames()
        if final.live or len(plan) < self._segment + 1 or self.frames_read > sum(plan):
            raise BitstreamError(
                f"audio length {audio_length} does not fit the {self.frames_read} frames read"
            )
        self.header, self._plan = final, plan

    def _segment_size(self, index: int) -> int | None:
        """Frames in segment ``index``; None while unknown (a live 24 kHz stream's only segment)."""
        if self._plan:
            return self._plan[index]
        assert self.header is not None
        cfg = self.header.config
        if cfg.segment_length is None:
            return None
        # Live 48 kHz stream: every segment is full until the length says which one is the last.
        return math.ceil(cfg.segment_length / cfg.hop_length)

    def feed(self, data: bytes) -> list[FrameChunk]:
        """Take the next bytes of the stream; return the frames they complete (maybe none)."""
        if data:
            self._bits.feed(data)
        out: list[FrameChunk] = []
        try:
            while not self.done and self._step(out):
                pass
        except ArithmeticError_ as e:
            hint = self.lm.decode_hint() if self.lm is not None else ""
            raise BitstreamError(f"corrupt .ecdc data in segment {self._segment}: {e}{hint}") from e
        return out

    def _need_bytes(self, n: int) -> bool:
        return 8 * n <= self._bits.available

    def _step(self, out: list[FrameChunk]) -> bool:
        """Make one unit of progress; False when more bytes are needed."""
        if self.header is None:
            if self._meta_size is None:
                if not self._need_bytes(PREFIX.size):
                    return False
                self._meta_size = EcdcHeader.parse_prefix(self._bits.take_bytes(PREFIX.size))
            if not self._need_bytes(self._meta_size):
                return False
            self.header = EcdcHeader.parse_meta(self._bits.take_bytes(self._meta_size))
            self._plan = self.header.segment_frames()
            if self.header.use_lm:
                self.lm = check_predictor(self._lm_given, self.header)
            return True
        assert self.header is not None
        cfg = self.header.config
        size = self._segment_size(self._segment) if self._segment >= 0 else 0
        if self._segment < 0 or (size is not None and self._in_segment >= size):
            # Start the next segment (or stop after the last one).
            if self._plan and self._segment + 1 >= len(self._plan):
                self.done = True
                return False
            if cfg.normalize:
                if not self._need_bytes(_SCALE.size):
                    return False
                self._bits.align()
                (scale,) = _SCALE.unpack(self._bits.take_bytes(_SCALE.size))
                if not math.isfinite(scale) or scale <= 0:
                    raise BitstreamError(f"corrupt .ecdc data: segment {self._segment + 1} has scale {scale}")
                self._scale = scale
            else:
                self._bits.align()
            self._segment += 1
            self._in_segment = 0
            if self.lm is not None:
                self._decoder = ArithmeticDecoder(self._bits)
                self._lm_state = self.lm.initial_state()
                self._previous = None
                self._pending = None
            return True
        codes = self._decode_frames(size)
        if codes is None:
            return False
        self._in_segment += codes.shape[1]
        self.frames_read += codes.shape[1]
        out.append(FrameChunk(self._segment, codes, self._scale))
        return True

    def _decode_frames(self, limit: int | None) -> torch.Tensor | None:
        """Frames ``[n_q, t]`` decodable now from the current segment (None if none yet)."""
        assert self.header is not None
        n_q = self.header.n_q
        left = None if limit is None else limit - self._in_segment
        if self.lm is None:
            bits = self.header.config.bits_per_codebook
            can = self._bits.available // (bits * n_q)
            t = can if left is None else min(can, left)  # padding is < 8 bits: never a whole frame
            if t <= 0:
                return None
            values = self._bits.read_array(t * n_q, bits)
            return torch.from_numpy(values.reshape(t, n_q).T.copy())
        frames: list[torch.Tensor] = []
        cap = MAX_CHUNK_FRAMES if left is None else min(left, MAX_CHUNK_FRAMES)
        while len(frames) < cap:  # chunks stay small: the codes are kept as compact tensors
            frame = self._decode_lm_frame()
            if frame is None:
                break
            frames.append(frame)
        return torch.stack(frames, dim=1) if frames else None

    def _decode_lm_frame(self) -> torch.Tensor | None:
        assert self.lm is not None and self._decoder is not None and self._lm_state is not None
        assert self.header is not None
        if self._pending is None:
            probs, state = self.lm.step(self._previous, self._lm_state, self.header.n_q)
            self._pending = (quantized_cdf(probs).tolist(), state)
        cdfs, state = self._pending
        snap = self._decoder.snapshot()
        try:
            frame = torch.tensor([self._decoder.decode(cdf) for cdf in cdfs], dtype=torch.long)
        except NeedMoreData:
            self._decoder.restore(snap)
            return None
        self._lm_state, self._previous, self._pending = state, frame, None
        return frame

    def finish(self) -> None:
        """Check the stream is complete (all declared frames read)."""
        if self.header is None:
            raise BitstreamError("truncated .ecdc file (the header is incomplete)")
        if self.header.live:
            raise BitstreamError(".ecdc stream is unfinished: its header declares no audio length yet")
        if not self.done:
            raise BitstreamError(
                f"truncated .ecdc file: {self.frames_read} of {sum(self._plan)} frames "
                f"(segment {max(self._segment, 0) + 1} of {len(self._plan)})"
                + (self.lm.decode_hint() if self.lm is not None else "")
            )


def _read_chunks(fileobj: IO[bytes]) -> Iterator[bytes]:
    while True:
        try:
            data = fileobj.read(READ_CHUNK)
        except OSError as e:
            raise BitstreamError(f"cannot read the .ecdc stream: {e}") from e
        if not data:
            return
        yield data


def read_header(fileobj: IO[bytes]) -> tuple[EcdcHeader, bytes]:
    """The header of a stream and its raw bytes (to hand on to an :class:`EcdcReader`)."""
    prefix = _read_exact(fileobj, PREFIX.size)
    size = EcdcHeader.parse_prefix(prefix)
    meta = _read_exact(fileobj, size)
    return EcdcHeader.parse_meta(meta), prefix + meta


def _read_exact(fileobj: IO[bytes], n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        try:
            data = fileobj.read(min(n - len(buf), READ_CHUNK))
        except OSError as e:
            raise BitstreamError(f"cannot read the .ecdc stream: {e}") from e
        if not data:
            raise BitstreamError("truncated .ecdc file (the header is incomplete)")
        buf += data
    return buf


def iter_chunks(
    fileobj: IO[bytes],
    lm: Predictor | None = None,
    already_read: bytes = b"",
    reader: EcdcReader | None = None,
) -> Iterator[FrameChunk]:
    """Decode a file object piece by piece, yielding frames as they complete, then check the end.

    ``already_read``: bytes of the stream taken from ``fileobj`` before (e.g. by :func:`read_header`);
    ``reader``: the :class:`EcdcReader` to use (to look at its header afterwards).
    """
    reader = reader or EcdcReader(lm)
    if already_read:
        yield from reader.feed(already_read)
    for data in _read_chunks(fileobj):
        if reader.done:
            break
        yield from reader.feed(data)
    reader.finish()


def read_ecdc(fileobj: IO[bytes], lm: Predictor | None = None, already_read: bytes = b"") -> Encoded:
    """Read a whole ``.ecdc`` stream into an :class:`~rvqkit.Encoded` (batch of 1); ``lm`` is needed
    for entropy-coded streams; ``already_read`` as in :func:`iter_chunks`."""
    reader = EcdcReader(lm)
    chunks = list(iter_chunks(fileobj, already_read=already_read, reader=reader))
    assert reader.header is not None
    return encoded_from_chunks(reader.header, chunks)


def follow_ecdc(
    path: str | os.PathLike[str],
    lm: Predictor | None = None,
    poll_s: float = 0.05,
    idle_timeout_s: float = 10.0,
) -> Iterator[FrameChunk]:
    """Read an ``.ecdc`` file while another process writes it, yielding frames as they become readable.

    Stops when the file is complete (a live file: once its writer has filled in the length). Raises
    :class:`BitstreamError` if no new bytes arrive for ``idle_timeout_s`` seconds before that.
    """
    reader = EcdcReader(lm)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise BitstreamError(f"cannot open {path}: {e.strerror}") from e
    with f:
        idle = 0.0
        while not reader.done:
            data = f.read(READ_CHUNK)
            # The header is looked at after the bytes: a writer fills in the length before its last bytes.
            if reader.header is not None and reader.header.live:
                final = _peek_header(f.fileno(), reader)
                if final is not None and not final.live:
                    reader.set_audio_length(final.audio_length)
            chunks = reader.feed(data)
            yield from chunks
            if data or chunks:
                idle = 0.0
                continue
            if idle >= idle_timeout_s:
                break
            time.sleep(poll_s)
            idle += poll_s
    reader.finish()


def _peek_header(fd: int, reader: EcdcReader) -> EcdcHeader | None:
    size = reader._meta_size or 0
    raw = os.pread(fd, PREFIX.size + size, 0)
    if len(raw) < PREFIX.size + size:
        return None
    return EcdcHeader.parse_meta(raw[PREFIX.size :])


def encoded_from_chunks(header: EcdcHeader, chunks: list[FrameChunk]) -> Encoded:
    """Assemble decoded frames into an :class:`~rvqkit.Encoded` (batch of 1)."""
    cfg = header.config
    codes = (
        torch.cat([c.codes for c in chunks], dim=1)
        if chunks
        else torch.zeros(header.n_q, 0, dtype=torch.long)
    )
    scales = None
    if cfg.normalize:
        per_segment: dict[int, float] = {c.segment: c.scale for c in chunks if c.scale is not None}
        scales = torch.tensor([[per_segment[i] for i in sorted(per_segment)]], dtype=torch.float32)
    return Encoded(
        codes=codes[None],
        scales=scales,
        lengths=torch.tensor([header.audio_length]),
        frame_lengths=torch.tensor([codes.shape[1]]),
        sample_rate=cfg.sampling_rate,
        channels=cfg.audio_channels,
        bandwidth=cfg.bandwidth_for_n_q(header.n_q),
        model=header.model,
    )
