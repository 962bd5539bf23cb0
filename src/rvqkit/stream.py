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
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import soxr
import torch

from .errors import AudioError, CodesError, RvqkitError
from .packets import CodePacket
from .precision import model_call

if TYPE_CHECKING:
    from .codec import Codec


class StreamError(RvqkitError):
    """A streaming call out of order (push after flush) or with a chunk of the wrong shape."""


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

    A thin buffer over the model's streaming interface (:meth:`rvqkit.model.EncodecModel.encode_step`).

    Args:
        codec: the model.
        bandwidth: kbps.
        batch_size: independent streams pushed together (in lockstep).
        sample_rate: rate of the pushed audio in Hz (default: the model's). Another rate goes through
            soxr's streaming resampler (one per stream, quality HQ as :meth:`Codec.encode` uses): the
            codes equal ``Codec.encode`` of the whole signal at that rate. The resampler holds back
            audio until more arrives (or until :meth:`flush`): up to about 30 ms at 16 kHz in 10 ms
            chunks (its output comes in bursts), which adds to the latency.
            Chunks are ``[batch, channels, samples]`` with the model's channel count.
        step: None (default): every chunk goes into the model as pushed, for the lowest latency; the
            codes are those of offline encoding except at rare near-ties, since narrow chunks round
            differently (docs/streaming.md gives the measured share). A number of samples: the audio is
            fed by :func:`rvqkit.model.feed_rule` in feeds of ``step`` samples (holding back up to two
            steps), so the codes are exactly those of :class:`rvqkit.engine.Engine` with that ``step``,
            however the audio is chunked; ``step=codec.model.step_samples()`` gives exactly
            :meth:`Codec.encode`'s codes.
    """

    def __init__(
        self,
        codec: Codec,
        bandwidth: float,
        batch_size: int = 1,
        sample_rate: int | None = None,
        step: int | None = None,
    ) -> None:
        self.codec = codec
        self.n_q = codec.n_q_for(bandwidth)
        self.batch_size = batch_size
        self.segmented = codec.config.segment_length is not None
        if step is not None and step < 1:
            raise StreamError(f"step must be at least 1 sample, got {step}")
        self.step = step
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
        self._state = self.codec.model.init_encode_state(self.batch_size, self.n_q)
        self._pending = torch.zeros(self.batch_size, self.codec.channels, 0, device=self.codec.device)

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
        return self._feed(x, final=False)

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
        return self._feed(x, final=True)

    def _feed(self, x: torch.Tensor, final: bool) -> CodePacket:
        """As pushed (``step`` None), or in the feeds of :meth:`EncodecModel.encode_feed`."""
        model = self.codec.model
        if self.step is None:
            packets = [model.encode_step(x, self._state, final)]
        else:
            buf, packets = torch.cat([self._pending, x], dim=-1), []
            while (feed := model.encode_feed(self._state, buf.shape[-1], final, self.step)) is not None:
                n, last = feed
                packets.append(model.encode_step(buf[..., :n], self._state, last))
                buf = buf[..., n:]
                if last:
                    break
            self._pending = buf
        codes = torch.cat([p.codes for p in packets], dim=-1) if packets else self._no_codes()
        scales = [p.scales for p in packets if p.scales is not None]
        frames = [f for p in packets for f in p.segment_frames]
        self.frames_out += codes.shape[-1]
        return CodePacket(codes.cpu(), torch.cat(scales, dim=1).cpu() if scales else None, frames)

    def _no_codes(self) -> torch.Tensor:
        return torch.zeros(self.batch_size, self.n_q, 0, dtype=torch.long, device=self.codec.device)


class StreamDecoder:
    """Codes in, audio out, packet by packet; ``flush()`` returns the rest. A thin buffer over
    :meth:`rvqkit.model.EncodecModel.decode_step`.

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
        self._state = self.codec.model.init_decode_state(self.batch_size)

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
        return self._emit(self.codec.model.decode_step(packet, self._state, final=False))

    @model_call
    def flush(self, length: int | None = None) -> torch.Tensor:
        """End of codes: return the remaining audio (trimmed to ``length`` samples if given here or before)."""
        if self.finished:
            raise StreamError("flush called twice: call reset() to start a new signal")
        self.finished = True
        if length is not None:
            self.length = length
        empty = CodePacket(torch.zeros(self.batch_size, 1, 0, dtype=torch.long))
        return self._emit(self.codec.model.decode_step(empty, self._state, final=True))


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
