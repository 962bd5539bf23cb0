"""The EnCodec network: encoder, quantizer, decoder, the 48 kHz model's segmenting, and the streaming
interface that offline, batched and live use all run on.

Tensors here are already at the model's sample rate and channel count; :class:`rvqkit.Codec` does the
conversion from user audio. Shapes: audio ``[B, channels, samples]``, codes ``[B, n_q, frames]``.

Streaming interface (moshi's ``StreamingModule`` is the anchor): :meth:`EncodecModel.init_encode_state`
/ :meth:`EncodecModel.encode_step` and :meth:`EncodecModel.init_decode_state` /
:meth:`EncodecModel.decode_step`. A state holds ``B`` independent rows; rows whose states have the same
:func:`~rvqkit.nn.streaming.state_signature` (the same phase) can be stacked into one state, stepped in
one call and split back. At 24 kHz the state carries every convolution's input buffer, the transposed
convolutions' overlap tails and the LSTM's (h, c); at 48 kHz it holds the samples of the segment not yet
complete (encode) and the overlap-add sums not yet final (decode). How a signal is cut into steps is
:meth:`EncodecModel.encode_feed` / :meth:`EncodecModel.decode_feed`, one rule for every caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import CodecConfig
from .framing import overlap_weight, segment_frames
from .nn.seanet import SEANetDecoder, SEANetEncoder
from .nn.streaming import StreamingModule
from .packets import CodePacket
from .quant.rvq import ResidualVectorQuantizer


def feed_rule(buffered: int, ended: bool, step: int) -> tuple[int, bool] | None:
    """The next feed of a causal stream with ``buffered`` samples (or frames) waiting: ``(n, final)``, or
    None to wait for more. A regular feed is ``step`` long and is taken only while more than two steps
    wait; at the end the rest (one to two steps, or the whole of a short signal) goes in one final call.
    So no call is narrow (narrow convolutions round differently: see ``EncodecModel.block_length``), and
    the feeds of a signal depend only on its length and ``step``, never on how it arrived. ``step`` 0 (no
    blocks): the whole signal in one final feed."""
    if step > 0 and buffered > 2 * step:
        return step, False
    return (buffered, True) if ended else None


def _run_in_blocks(
    module: StreamingModule, x: torch.Tensor, block: int | None, min_block: int
) -> torch.Tensor:
    """``module(x)`` computed as a stream fed by :func:`feed_rule` in chunks of ``block`` samples of the
    whole batch together (``block / batch`` per item, but at least ``min_block``); None: at once."""
    if block is not None:
        block = max(min_block, block // x.shape[0])
    if block is None or x.shape[-1] <= 2 * block:
        return module(x)
    state, outs, i = module.init_state(x.shape[0]), [], 0
    while (feed := feed_rule(x.shape[-1] - i, True, block)) is not None:
        n, final = feed
        outs.append(module.step(x[..., i : i + n], state, final=final))
        i += n
        if final:
            break
    return torch.cat(outs, dim=-1)


@dataclass
class EncodeState:
    """Streaming encoder state of ``B`` rows (see the module docstring).

    Attributes:
        n_q: codebooks per frame.
        layers: 24 kHz: the encoder's layer states.
        buffer: 48 kHz: samples from the next segment's start on ``[B, C, n]`` (None before the first).
    """

    n_q: int
    layers: Any = None
    buffer: torch.Tensor | None = None


@dataclass
class DecodeState:
    """Streaming decoder state of ``B`` rows.

    Attributes:
        layers: 24 kHz: the decoder's layer states.
        acc: 48 kHz: weighted sums of the decoded segments ``[B, C, n]`` from the first sample not yet
            returned; ``wsum`` ``[B, n]`` the summed weights there.
        weight_length: samples of the first decoded segment (0 before it): the references weight every
            segment with its triangle.
        offset: where the next segment starts in ``acc``.
    """

    layers: Any = None
    acc: torch.Tensor | None = None
    wsum: torch.Tensor | None = None
    weight_length: int = 0
    offset: int = 0


class EncodecModel(nn.Module):
    """SEANet encoder → residual vector quantizer → SEANet decoder, for one :class:`CodecConfig`."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = SEANetEncoder(cfg)
        self.quantizer = ResidualVectorQuantizer(cfg.num_codebooks, cfg.codebook_size, cfg.hidden_size)
        self.decoder = SEANetDecoder(cfg)
        #: Long signals of the causal (24 kHz) model run through the network in blocks of this many
        #: samples (2 s; for a batch, that many in all but at least 1 s per item), carrying the streaming
        #: state between blocks (see :meth:`embed_blocked`). A 60 s input's whole-signal activations are
        #: hundreds of MB per layer, streamed through memory layer after layer; 2 s blocks stay in the
        #: caches (measured: 60 s encode and decode 2.7x faster) and bound the memory. Convolutions and
        #: the LSTM give the same floats for blocks this wide as for the whole signal (tests/test_blocked.py;
        #: 0.8 s blocks still did, 0.4 s ones round differently in the deepest layers), so codes are
        #: unchanged; transposed convolutions round by width with two threads (decoded audio within
        #: ~1e-7). None: always the whole signal at once.
        self.block_length: int | None = 2 * cfg.sampling_rate if cfg.use_causal_conv else None

    # -- one segment -------------------------------------------------------------------------------
    def segment_scale(self, x: torch.Tensor) -> torch.Tensor | None:
        """RMS of the mono mix of a segment ``[B, C, T]`` plus 1e-8, shape ``[B, 1]``; None if not normalising."""
        if not self.config.normalize:
            return None
        mono = x.mean(dim=1, keepdim=True)
        return (mono.pow(2).mean(dim=2, keepdim=True).sqrt() + 1e-8).view(-1, 1)

    def normalized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A segment ``[B, C, T]`` divided by its scale (when normalising), and the scale."""
        scale = self.segment_scale(x)
        return (x, None) if scale is None else (x / scale.view(-1, 1, 1), scale)

    def embed_segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings ``[B, D, frames]`` of one segment, and its scale."""
        x, scale = self.normalized(x)
        return self.embed_blocked(x), scale

    def embed_blocked(self, x: torch.Tensor) -> torch.Tensor:
        """``encoder(x)`` for audio ``[B, C, T]``, run in blocks of :attr:`block_length` samples when the
        signal is longer than two blocks."""
        return _run_in_blocks(self.encoder, x, self.block_length, self.config.sampling_rate)

    def synthesize_blocked(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``decoder(embeddings)`` for ``[B, D, frames]``, in blocks of ``block_length / hop`` frames."""
        hop = self.config.hop_length
        blk = None if self.block_length is None else max(1, self.block_length // hop)
        return _run_in_blocks(self.decoder, embeddings, blk, self.config.sampling_rate // hop)

    def synthesize(self, embeddings: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Audio ``[B, C, frames * hop]`` of one segment from embeddings, rescaled if a scale is given."""
        out = self.synthesize_blocked(embeddings)
        return out if scale is None else out * scale.view(-1, 1, 1)

    # -- streaming interface -----------------------------------------------------------------------------
    @property
    def segmented(self) -> bool:
        return self.config.segment_length is not None

    def init_encode_state(self, batch_size: int, n_q: int) -> EncodeState:
        """A fresh encoder state for ``batch_size`` rows at the start of their signals."""
        return EncodeState(n_q, None if self.segmented else self.encoder.init_state(batch_size))

    def init_decode_state(self, batch_size: int) -> DecodeState:
        """A fresh decoder state for ``batch_size`` rows."""
        return DecodeState(None if self.segmented else self.decoder.init_state(batch_size))

    def step_samples(self, rows: int = 1) -> int:
        """Samples per regular 24 kHz encoder feed when ``rows`` rows share a call: :attr:`block_length`
        in all but at least one second per row (the width below which convolutions round differently)."""
        if self.block_length is None:
            return 0
        return max(self.config.sampling_rate, self.block_length // max(1, rows))

    def encode_feed(
        self, state: EncodeState, buffered: int, ended: bool, step: int
    ) -> tuple[int, bool] | None:
        """The next feed of a stream with ``buffered`` samples waiting (``ended``: no more will come):
        ``(samples, final)``, or None to wait. 24 kHz: :func:`feed_rule` with ``step`` samples. 48 kHz:
        whatever completes the next segment (a segment is computed whole, whatever the feeds), and at
        the end the rest."""
        seg = self.config.segment_length
        if seg is None:
            return feed_rule(buffered, ended, step)
        need = seg - (0 if state.buffer is None else state.buffer.shape[-1])
        if buffered >= need:
            return need, False
        return (buffered, True) if ended else None

    def decode_feed(
        self, segment_frames: list[int], buffered: int, ended: bool, step: int
    ) -> tuple[int, bool] | None:
        """The next decoder feed in frames: 24 kHz :func:`feed_rule` with ``step // hop`` frames; 48 kHz one
        segment (``segment_frames`` lists the frames of the segments still to feed)."""
        if not self.segmented:
            return feed_rule(buffered, ended, step // self.config.hop_length if step > 0 else 0)
        if not segment_frames:
            return (0, True) if ended else None
        n = segment_frames[0]
        if buffered < n:
            return None
        return n, ended and len(segment_frames) == 1

    def encode_step(self, x: torch.Tensor, state: EncodeState, final: bool = False) -> CodePacket:
        """Feed audio ``x`` ``[B, C, n]`` (``n`` may be 0); return the codes now final. ``final=True`` ends
        the signal: its end is padded exactly as offline and the rest returned."""
        if not self.segmented:
            emb = self.encoder.step(x, state.layers, final)
            if emb.shape[-1] == 0:
                return CodePacket(x.new_zeros(x.shape[0], state.n_q, 0, dtype=torch.long))
            return CodePacket(self.quantizer.encode(emb, state.n_q))
        seg, stride = self.config.segment_length, self.config.segment_stride
        assert seg is not None and stride is not None
        buf = x if state.buffer is None else torch.cat([state.buffer, x], dim=-1)
        codes, scales, frames = [], [], []
        # A segment is complete once its seg samples are in; at the end the rest is cut as offline.
        while buf.shape[-1] >= seg or (final and buf.shape[-1] > 0):
            emb, scale = self.embed_segment(buf[..., :seg])
            codes.append(self.quantizer.encode(emb, state.n_q))
            scales.append(scale)
            frames.append(codes[-1].shape[-1])
            buf = buf[..., stride:]
        state.buffer = buf
        if not codes:
            return CodePacket(x.new_zeros(x.shape[0], state.n_q, 0, dtype=torch.long), None, [])
        out_scales = torch.cat(scales, dim=1) if self.config.normalize else None  # type: ignore[arg-type]  # normalize: all set
        return CodePacket(torch.cat(codes, dim=-1), out_scales, frames)

    def decode_step(self, packet: CodePacket, state: DecodeState, final: bool = False) -> torch.Tensor:
        """Feed codes (48 kHz: whole segments with their scales); return the audio now final
        ``[B, C, n]``. ``final=True`` returns the rest. The caller trims to the signal's length."""
        codes = packet.codes.to(next(self.decoder.parameters()).device)
        if not self.segmented:
            emb = self.quantizer.decode(codes) if codes.shape[-1] else self._no_embeddings(codes)
            return self.decoder.step(emb, state.layers, final)
        outs, f0 = [], 0
        for i, nf in enumerate(packet.segment_frames):
            scale = None if packet.scales is None else packet.scales[:, i : i + 1].to(codes.device)
            seg = self.synthesize(self.quantizer.decode(codes[..., f0 : f0 + nf]), scale)
            if final and state.acc is None and len(packet.segment_frames) == 1:
                return seg  # a one-segment signal is not overlap-added, as the references
            outs.append(self._overlap_add(seg, state))
            f0 += nf
        if final and state.acc is not None:
            outs.append(self._take(state, state.acc.shape[-1]))
        if not outs:
            return torch.zeros(codes.shape[0], self.config.audio_channels, 0, device=codes.device)
        return torch.cat(outs, dim=-1)

    def _no_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.zeros(codes.shape[0], self.config.hidden_size, 0, device=codes.device)

    def _overlap_add(self, seg: torch.Tensor, state: DecodeState) -> torch.Tensor:
        """Add one decoded segment ``[B, C, n]`` with the references' triangular weight; return the audio
        before the next segment's start, which no later segment touches. (Two segments overlap at most,
        so the order of the additions is that of offline decoding and the floats are the same.)"""
        stride = self.config.segment_stride
        assert stride is not None
        n = seg.shape[-1]
        if state.weight_length == 0:
            state.weight_length = n
        weight = overlap_weight(state.weight_length, seg.device, seg.dtype)[:n]
        off, end = state.offset, state.offset + n
        if state.acc is None:
            state.acc = seg.new_zeros(*seg.shape[:-1], end)
            state.wsum = seg.new_zeros(seg.shape[0], end)
        elif end > state.acc.shape[-1]:
            grow = end - state.acc.shape[-1]
            state.acc = torch.cat([state.acc, seg.new_zeros(*seg.shape[:-1], grow)], dim=-1)
            state.wsum = torch.cat([state.wsum, seg.new_zeros(seg.shape[0], grow)], dim=-1)  # type: ignore[list-item]  # set on the first segment
        assert state.wsum is not None
        state.acc[..., off:end] += weight * seg
        state.wsum[:, off:end] += weight
        state.offset = off + stride
        return self._take(state, min(state.offset, state.acc.shape[-1]))

    def _take(self, state: DecodeState, n: int) -> torch.Tensor:
        assert state.acc is not None and state.wsum is not None
        out = state.acc[..., :n] / state.wsum[:, None, :n]
        state.acc, state.wsum = state.acc[..., n:], state.wsum[:, n:]
        state.offset -= n
        return out

    # -- offline: the same steps over whole signals ------------------------------------------------------
    def encode(self, x: torch.Tensor, n_q: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes ``[B, n_q, frames]`` for audio ``[B, C, T]`` and, when normalising, scales ``[B, segments]``:
        :meth:`encode_step` over the feeds of :meth:`encode_feed` (``step_samples(B)``)."""
        state, step, i = self.init_encode_state(x.shape[0], n_q), self.step_samples(x.shape[0]), 0
        packets = []
        while (feed := self.encode_feed(state, x.shape[-1] - i, True, step)) is not None:
            n, final = feed
            packets.append(self.encode_step(x[..., i : i + n], state, final))
            i += n
            if final:
                break
        codes = torch.cat([p.codes for p in packets], dim=-1)
        scales = [p.scales for p in packets if p.scales is not None]
        return codes, (torch.cat(scales, dim=1) if self.config.normalize and scales else None)

    def decode(self, codes: torch.Tensor, scales: torch.Tensor | None, length: int) -> torch.Tensor:
        """Audio ``[B, C, length]`` from codes ``[B, n_q, frames]`` of a ``length``-sample signal:
        :meth:`decode_step` over the feeds of :meth:`decode_feed`."""
        seg_frames = segment_frames(self.config, length) if self.segmented else []
        state, step, f, k = self.init_decode_state(codes.shape[0]), self.step_samples(codes.shape[0]), 0, 0
        outs = []
        while (feed := self.decode_feed(seg_frames[k:], codes.shape[-1] - f, True, step)) is not None:
            n, final = feed
            packet = CodePacket(codes[..., f : f + n])
            if self.segmented and n:
                packet = CodePacket(packet.codes, None if scales is None else scales[:, k : k + 1], [n])
                k += 1
            outs.append(self.decode_step(packet, state, final))
            f += n
            if final:
                break
        return torch.cat(outs, dim=-1)[..., :length].contiguous()
