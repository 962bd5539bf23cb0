"""Streaming encode and decode on the same model as offline: push audio, get codes as soon as each frame
is final; push codes, get audio as soon as it is final.

24 kHz (causal): sample-level streaming. Every convolution, transposed convolution and the LSTM carry
their state between calls (see :mod:`rvqkit.nn.streaming`), so a frame's codes come out as soon as its
320 samples are in (after a start-up of 7 frames, when the first layers' left reflect padding has read
the samples it needs), and the end is padded on :meth:`StreamEncoder.flush` exactly as offline.

48 kHz (non-causal, time group norm over each 1 s segment): segment-level streaming. A segment is
encoded when its 48000 samples are in; audio up to the start of the next segment's overlap is final as
soon as a segment is decoded.

Arrays are ``[batch, channels, samples]`` at the model's rate (``[channels, samples]`` or ``[samples]``
for a batch of one); codes ``[batch, n_q, frames]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import soxr
import torch

from .errors import AudioError, CodesError, RvqkitError
from .framing import overlap_weight
from .nn.streaming import split_state, stack_states, state_signature
from .precision import model_call, precision_scope

if TYPE_CHECKING:
    from .codec import Codec


class StreamError(RvqkitError):
    """A streaming call out of order (push after flush) or with a chunk of the wrong shape."""


@dataclass
class CodePacket:
    """Codes that became final in one call.

    Attributes:
        codes: int64 ``[batch, n_q, frames]`` (``frames`` may be 0).
        scales: ``[batch, segments]`` scales of the 48 kHz segments completed here, else None.
        segment_frames: frames of each 48 kHz segment completed here (empty for 24 kHz).
    """

    codes: torch.Tensor
    scales: torch.Tensor | None = None
    segment_frames: list[int] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[-1])


def _as_batch(audio: np.ndarray | torch.Tensor, batch_size: int, channels: int) -> torch.Tensor:
    x = torch.as_tensor(audio)
    if x.ndim == 1:
        x = x[None, None]
    elif x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] != batch_size or x.shape[1] != channels:
        raise StreamError(
            f"stream chunk must be [{batch_size}, {channels}, samples] at the model rate, got {tuple(x.shape)}"
        )
    if not torch.is_floating_point(x):
        raise StreamError("stream chunks must be float audio in [-1, 1]")
    if x.numel() and not torch.isfinite(x).all():
        raise AudioError("stream chunk contains NaN or Inf samples")
    return x.float().contiguous()


class StreamEncoder:
    """Audio in, codes out, chunk by chunk; ``flush()`` ends the signal. ``reset()`` starts a new one.

    Args:
        codec: the model.
        bandwidth: kbps.
        batch_size: independent streams pushed together.
        sample_rate: rate of the pushed audio in Hz (default: the model's). Another rate goes through
            soxr's streaming resampler (one per stream, quality HQ as :meth:`Codec.encode` uses): the
            codes equal ``Codec.encode`` of the whole signal at that rate. The resampler holds back
            audio until more arrives (or until :meth:`flush`): up to about 30 ms at 16 kHz in 10 ms
            chunks (its output comes in bursts), which adds to the latency.
            Chunks are ``[batch, channels, samples]`` with the model's channel count.
    """

    def __init__(
        self, codec: Codec, bandwidth: float, batch_size: int = 1, sample_rate: int | None = None
    ) -> None:
        self.codec = codec
        self.n_q = codec.n_q_for(bandwidth)
        self.batch_size = batch_size
        self.segmented = codec.config.segment_length is not None
        from .audio import check_sample_rate

        self.sample_rate = codec.sample_rate if sample_rate is None else check_sample_rate(sample_rate)
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next push is the start of a new signal."""
        self.samples_in = 0  # samples pushed so far, at the model's rate (after resampling)
        self.input_samples = 0  # samples pushed so far at self.sample_rate
        self.frames_out = 0  # frames returned so far
        self._resamplers = (
            None
            if self.sample_rate == self.codec.sample_rate
            else [
                soxr.ResampleStream(
                    self.sample_rate,
                    self.codec.sample_rate,
                    self.codec.channels,
                    dtype="float32",
                    quality="HQ",
                )
                for _ in range(self.batch_size)
            ]
        )
        self.finished = False
        if self.segmented:
            self._buffer: torch.Tensor | None = None  # samples from self._seg_start on
            self._seg_start = 0
        else:
            self._state = self.codec.model.encoder.init_state(self.batch_size)

    @property
    def length(self) -> int:
        """Samples pushed so far (the signal's length once flushed)."""
        return self.samples_in

    @model_call
    def push(self, audio: np.ndarray | torch.Tensor) -> CodePacket:
        """Feed the next chunk (any number of samples, 0 included); return the frames now final."""
        if self.finished:
            raise StreamError("push after flush: call reset() to start a new signal")
        x = self._resample(_as_batch(audio, self.batch_size, self.codec.channels), last=False)
        x = x.to(self.codec.device)
        self.samples_in += x.shape[-1]
        return self._segments(x, final=False) if self.segmented else self._frames(x, final=False)

    def _resample(self, x: torch.Tensor, last: bool) -> torch.Tensor:
        """``x`` ``[batch, channels, n]`` at :attr:`sample_rate` → what the resamplers give at the model's rate."""
        self.input_samples += x.shape[-1]
        if self._resamplers is None:
            return x
        a = x.cpu().numpy()
        out = [
            np.asarray(r.resample_chunk(np.ascontiguousarray(a[b].T), last=last), dtype=np.float32)
            for b, r in enumerate(self._resamplers)
        ]  # [n_out, channels] each; every stream gets chunks of the same sizes, so the same n_out
        return torch.from_numpy(np.ascontiguousarray(np.stack(out).transpose(0, 2, 1)))

    @model_call
    def flush(self, last: np.ndarray | torch.Tensor | None = None) -> CodePacket:
        """End of signal: take the optional ``last`` chunk, pad the end exactly as offline encoding does
        and return the remaining frames. (Giving the last chunk here rather than to ``push`` lets the
        end be computed in one call.)"""
        if self.finished:
            raise StreamError("flush called twice: call reset() to start a new signal")
        if last is None:
            x = torch.zeros(self.batch_size, self.codec.channels, 0)
        else:
            x = _as_batch(last, self.batch_size, self.codec.channels)
        x = self._resample(x, last=True).to(self.codec.device)
        self.samples_in += x.shape[-1]
        if self.samples_in == 0:
            raise AudioError("stream is empty (0 samples pushed)")
        self.finished = True
        return self._segments(x, final=True) if self.segmented else self._frames(x, final=True)

    def _frames(self, x: torch.Tensor, final: bool) -> CodePacket:
        model = self.codec.model
        emb = model.encoder.step(x, self._state, final)
        codes = model.quantizer.encode(emb, self.n_q) if emb.shape[-1] else self._no_codes()
        self.frames_out += codes.shape[-1]
        return CodePacket(codes.cpu())

    def _no_codes(self) -> torch.Tensor:
        return torch.zeros(self.batch_size, self.n_q, 0, dtype=torch.long, device=self.codec.device)

    def _segments(self, x: torch.Tensor, final: bool) -> CodePacket:
        cfg, model = self.codec.config, self.codec.model
        seg_len, stride = cfg.segment_length, cfg.segment_stride
        assert seg_len is not None and stride is not None
        buf = x if self._buffer is None else torch.cat([self._buffer, x], dim=-1)
        codes, scales, frames = [], [], []
        # A segment is complete once its seg_len samples are in; at the end, the rest are cut as offline.
        while buf.shape[-1] >= seg_len or (final and self._seg_start < self.samples_in):
            seg = buf[..., :seg_len]
            emb, scale = model.embed_segment(seg)
            codes.append(model.quantizer.encode(emb, self.n_q))
            scales.append(scale)
            frames.append(codes[-1].shape[-1])
            buf = buf[..., stride:]
            self._seg_start += stride
        self._buffer = buf
        if not codes:
            return CodePacket(self._no_codes().cpu(), None, [])
        out = torch.cat(codes, dim=-1)
        self.frames_out += out.shape[-1]
        return CodePacket(out.cpu(), torch.cat(scales, dim=1).cpu(), frames)  # type: ignore[arg-type]


class StreamDecoder:
    """Codes in, audio out, packet by packet; ``flush()`` returns the rest.

    Args:
        length: the signal's length in samples if known (codes files store it): audio past it is
            never returned. Otherwise the output is ``frames * 320`` samples and the caller trims.
    """

    def __init__(self, codec: Codec, batch_size: int = 1, length: int | None = None) -> None:
        self.codec = codec
        self.batch_size = batch_size
        self.length = length
        self.segmented = codec.config.segment_length is not None
        self.reset()

    def reset(self) -> None:
        self.samples_out = 0
        self.finished = False
        if self.segmented:
            self._acc: torch.Tensor | None = None  # weighted sums from sample self.samples_out on
            self._wsum: torch.Tensor | None = None
            self._weight: torch.Tensor | None = None
            self._segments_in = 0
            self._taken = 0  # samples of the overlap-added signal taken out of the buffers
        else:
            self._state = self.codec.model.decoder.init_state(self.batch_size)

    def _check(self, packet: CodePacket) -> None:
        c = packet.codes
        if c.ndim != 3 or c.shape[0] != self.batch_size:
            raise CodesError(f"codes must be [{self.batch_size}, n_q, frames], got {tuple(c.shape)}")
        if c.numel() and (c.min() < 0 or c.max() >= self.codec.codebook_size):
            raise CodesError(f"codes out of range [0, {self.codec.codebook_size})")
        if not 1 <= c.shape[1] <= self.codec.num_codebooks:
            raise CodesError(f"codes hold {c.shape[1]} codebooks, the model has {self.codec.num_codebooks}")
        if self.segmented:
            if sum(packet.segment_frames) != c.shape[-1]:
                raise CodesError("48 kHz codes must come in whole segments with their segment_frames")
            if packet.segment_frames and (
                packet.scales is None or packet.scales.shape != (self.batch_size, len(packet.segment_frames))
            ):
                raise CodesError("48 kHz codes need one scale per segment and stream")

    def _emit(self, audio: torch.Tensor) -> torch.Tensor:
        if self.length is not None:
            audio = audio[..., : max(0, self.length - self.samples_out)]
        self.samples_out += audio.shape[-1]
        return audio.cpu()

    @model_call
    def push(self, packet: CodePacket | torch.Tensor) -> torch.Tensor:
        """Decode the next codes (a packet, or a codes tensor for 24 kHz); return audio now final."""
        if self.finished:
            raise StreamError("push after flush: call reset() to start a new signal")
        if isinstance(packet, torch.Tensor):
            packet = CodePacket(packet)
        self._check(packet)
        model, dev = self.codec.model, self.codec.device
        if not self.segmented:
            emb = model.quantizer.decode(packet.codes.to(dev))
            return self._emit(model.decoder.step(emb, self._state, final=False))
        outs, f0 = [], 0
        for i, nf in enumerate(packet.segment_frames):
            emb = model.quantizer.decode(packet.codes[..., f0 : f0 + nf].to(dev))
            scale = packet.scales[:, i : i + 1].to(dev)  # type: ignore[index]
            outs.append(self._overlap_add(model.synthesize(emb, scale)))
            f0 += nf
        if not outs:
            return torch.zeros(self.batch_size, self.codec.channels, 0)
        return self._emit(torch.cat(outs, dim=-1))

    def _overlap_add(self, frame: torch.Tensor) -> torch.Tensor:
        """Add one decoded segment as :meth:`rvqkit.model.EncodecModel.decode` does; return what is final."""
        stride = self.codec.config.segment_stride
        assert stride is not None
        n = frame.shape[-1]
        if self._weight is None:  # the references weight every segment with the first one's triangle
            self._weight = overlap_weight(n, frame.device, frame.dtype)
        off = self._segments_in * stride - self._taken
        end = off + n
        if self._acc is None:
            self._acc = frame.new_zeros(*frame.shape[:-1], end)
            self._wsum = frame.new_zeros(end)
        elif end > self._acc.shape[-1]:
            grow = end - self._acc.shape[-1]
            self._acc = torch.cat([self._acc, frame.new_zeros(*frame.shape[:-1], grow)], dim=-1)
            self._wsum = torch.cat([self._wsum, frame.new_zeros(grow)])  # type: ignore[list-item]
        self._acc[..., off:end] += self._weight[:n] * frame
        self._wsum[off:end] += self._weight[:n]  # type: ignore[index]
        self._segments_in += 1
        ready = min(self._segments_in * stride - self._taken, self._acc.shape[-1])  # before the next segment
        return self._take(ready)

    def _take(self, n: int) -> torch.Tensor:
        assert self._acc is not None and self._wsum is not None
        out = self._acc[..., :n] / self._wsum[:n]
        self._acc, self._wsum = self._acc[..., n:], self._wsum[n:]
        self._taken += n
        return out

    @model_call
    def flush(self, length: int | None = None) -> torch.Tensor:
        """End of codes: return the remaining audio (trimmed to ``length`` samples if given here or before)."""
        if self.finished:
            raise StreamError("flush called twice: call reset() to start a new signal")
        self.finished = True
        if length is not None:
            self.length = length
        if self.segmented:
            if self._acc is None:
                return torch.zeros(self.batch_size, self.codec.channels, 0)
            return self._emit(self._take(self._acc.shape[-1]))
        dev = self.codec.device
        x = torch.zeros(self.batch_size, self.codec.config.hidden_size, 0, device=dev)
        return self._emit(self.codec.model.decoder.step(x, self._state, final=True))


def _groups(keys: list[object]) -> list[list[int]]:
    out: dict[object, list[int]] = {}
    for i, key in enumerate(keys):
        out.setdefault(key, []).append(i)
    return list(out.values())


@torch.inference_mode()
def push_many(encoders: list[StreamEncoder], chunks: list[np.ndarray | torch.Tensor]) -> list[CodePacket]:
    """Push one chunk to each of several independent encoders of one codec, batching the model work.

    Encoders whose streams are in the same phase (same state signature, same chunk length and bandwidth)
    share one model call; the result for each is what ``encoder.push(chunk)`` would return (up to float
    rounding of the batched computation). 48 kHz encoders and singletons are pushed one by one.
    """
    if len(encoders) != len(chunks):
        raise StreamError(f"{len(encoders)} encoders but {len(chunks)} chunks")
    results: list[CodePacket | None] = [None] * len(encoders)
    xs = [_as_batch(c, e.batch_size, e.codec.channels) for e, c in zip(encoders, chunks, strict=True)]
    keys: list[object] = []
    for i, (e, x) in enumerate(zip(encoders, xs, strict=True)):
        if e.segmented or e.finished:
            keys.append(("alone", i))
        else:
            keys.append((id(e.codec), e.n_q, x.shape[-1], state_signature(e._state)))
    for idx in _groups(keys):
        if len(idx) == 1:
            results[idx[0]] = encoders[idx[0]].push(xs[idx[0]])
            continue
        first = encoders[idx[0]]
        sizes = [encoders[i].batch_size for i in idx]
        state = stack_states([encoders[i]._state for i in idx])
        x = torch.cat([xs[i] for i in idx], dim=0).to(first.codec.device)
        with precision_scope(first.codec.precision, first.codec.device):
            emb = first.codec.model.encoder.step(x, state, final=False)
            codes = first.codec.model.quantizer.encode(emb, first.n_q) if emb.shape[-1] else None
        for j, (i, st) in enumerate(zip(idx, split_state(state, sizes), strict=True)):
            enc = encoders[i]
            enc._state = st
            enc.samples_in += xs[i].shape[-1]
            part = enc._no_codes() if codes is None else codes[sum(sizes[:j]) : sum(sizes[: j + 1])]
            enc.frames_out += part.shape[-1]
            results[i] = CodePacket(part.cpu())
    return results  # type: ignore[return-value]


@torch.inference_mode()
def decode_many(
    decoders: list[StreamDecoder], packets: list[CodePacket | torch.Tensor]
) -> list[torch.Tensor]:
    """Push codes to several independent 24 kHz decoders of one codec in one batched model call per
    phase group, as :func:`push_many` does for encoders."""
    if len(decoders) != len(packets):
        raise StreamError(f"{len(decoders)} decoders but {len(packets)} packets")
    pk = [p if isinstance(p, CodePacket) else CodePacket(p) for p in packets]
    results: list[torch.Tensor | None] = [None] * len(decoders)
    keys: list[object] = []
    for i, (d, p) in enumerate(zip(decoders, pk, strict=True)):
        if d.segmented or d.finished or p.num_frames == 0:
            keys.append(("alone", i))
        else:
            d._check(p)
            keys.append((id(d.codec), tuple(p.codes.shape[1:]), state_signature(d._state)))
    for idx in _groups(keys):
        if len(idx) == 1:
            results[idx[0]] = decoders[idx[0]].push(pk[idx[0]])
            continue
        first = decoders[idx[0]]
        sizes = [decoders[i].batch_size for i in idx]
        state = stack_states([decoders[i]._state for i in idx])
        codes = torch.cat([pk[i].codes for i in idx], dim=0).to(first.codec.device)
        with precision_scope(first.codec.precision, first.codec.device):
            audio = first.codec.model.decoder.step(
                first.codec.model.quantizer.decode(codes), state, final=False
            )
        for j, (i, st) in enumerate(zip(idx, split_state(state, sizes), strict=True)):
            decoders[i]._state = st
            results[i] = decoders[i]._emit(audio[sum(sizes[:j]) : sum(sizes[: j + 1])])
    return results  # type: ignore[return-value]


@dataclass
class StreamingSession:
    """An encoder and a decoder stream sharing one model; see :meth:`rvqkit.Codec.streaming`."""

    encoder: StreamEncoder
    decoder: StreamDecoder

    def reset(self) -> None:
        self.encoder.reset()
        self.decoder.reset()


@contextmanager
def streaming(codec: Codec, batch_size: int = 1, bandwidth: float = 6.0) -> Iterator[StreamingSession]:
    """``with codec.streaming(batch_size) as s:`` push audio to ``s.encoder`` and codes to ``s.decoder``."""
    session = StreamingSession(StreamEncoder(codec, bandwidth, batch_size), StreamDecoder(codec, batch_size))
    try:
        yield session
    finally:
        session.reset()


def startup_frames(codec: Codec) -> int:
    """Frames the 24 kHz encoder must receive before its first code: the left reflect padding of its
    frame-rate convolution reads ``kernel_size - 1`` later frames. (Measured by the tests.)"""
    return codec.config.last_kernel_size


def algorithmic_latency_samples(codec: Codec) -> int:
    """Samples between the end of a frame's audio and the moment its codes and audio can be final in
    steady state: 0 beyond the frame itself at 24 kHz (causal), one segment at 48 kHz."""
    seg = codec.config.segment_length
    return codec.hop_length if seg is None else seg
