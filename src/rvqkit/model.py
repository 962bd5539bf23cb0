"""The EnCodec network: encoder, quantizer, decoder, and the 48 kHz model's segmenting.

Tensors here are already at the model's sample rate and channel count; :class:`rvqkit.Codec` does the
conversion from user audio. Shapes: audio ``[B, channels, samples]``, codes ``[B, n_q, frames]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .config import CodecConfig
from .framing import overlap_weight, segment_bounds
from .nn.seanet import SEANetDecoder, SEANetEncoder
from .nn.streaming import StreamingModule
from .quant.rvq import ResidualVectorQuantizer

#: A segment's embeddings ``[1, D, frames]`` and its scale ``[1, 1]`` (None when not normalising).
Embedded = tuple[torch.Tensor, torch.Tensor | None]


def _run_in_blocks(
    module: StreamingModule, x: torch.Tensor, block: int | None, min_block: int
) -> torch.Tensor:
    """``module(x)`` computed as a stream of chunks when ``x`` is longer than two chunks; the last call
    takes between one and two chunks, so that no chunk is narrow. A chunk holds ``block`` samples of
    the whole batch together (``block / batch`` per item), but at least ``min_block`` per item."""
    n = x.shape[-1]
    if block is not None:
        block = max(min_block, block // x.shape[0])
    if block is None or n <= 2 * block:
        return module(x)
    state, outs, i = module.init_state(x.shape[0]), [], 0
    while n - i > 2 * block:
        outs.append(module.step(x[..., i : i + block], state))
        i += block
    outs.append(module.step(x[..., i:], state, final=True))
    return torch.cat(outs, dim=-1)


class EncodecModel(nn.Module):
    """SEANet encoder → residual vector quantizer → SEANet decoder, for one :class:`CodecConfig`."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SEANetEncoder(cfg)
        self.quantizer = ResidualVectorQuantizer(cfg.num_quantizers, cfg.codebook_size, cfg.hidden_size)
        self.decoder = SEANetDecoder(cfg)
        #: Most 48 kHz segments that run through the network as one batch in :meth:`encode`. 1 (one
        #: segment at a time, as the references) is exact and, on CPU, also the fastest: a batch of 1 s
        #: segments outgrows the caches, and batched LSTM matrix products round differently (measured:
        #: 1-2 of 72,000 codes of a 30 s signal at 24 kbps differ from the references with 4 or more).
        #: Larger batches are for GPUs; :meth:`embed_items` batches only the LSTM, for corpus encoding.
        self.segment_batch = 1
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
        #: :meth:`embed_items` batches the LSTM of pieces up to this long (seconds); longer ones run alone,
        #: in blocks, to bound memory (8 rows of 60 s: about 300 MB of precomputed LSTM input products).
        self.lstm_batch_max_seconds = 60.0

    # -- one segment -------------------------------------------------------------------------------
    def segment_scale(self, x: torch.Tensor) -> torch.Tensor | None:
        """RMS of the mono mix of a segment ``[B, C, T]`` plus 1e-8, shape ``[B, 1]``; None if not normalising."""
        if not self.cfg.normalize:
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
        return _run_in_blocks(self.encoder, x, self.block_length, self.cfg.sampling_rate)

    def synthesize_blocked(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``decoder(embeddings)`` for ``[B, D, frames]``, in blocks of ``block_length / hop`` frames."""
        hop = self.cfg.hop_length
        blk = None if self.block_length is None else max(1, self.block_length // hop)
        return _run_in_blocks(self.decoder, embeddings, blk, self.cfg.sampling_rate // hop)

    def synthesize(self, embeddings: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Audio ``[B, C, frames * hop]`` of one segment from embeddings, rescaled if a scale is given."""
        out = self.synthesize_blocked(embeddings)
        return out if scale is None else out * scale.view(-1, 1, 1)

    # -- whole signals ---------------------------------------------------------------------------------
    def segment_groups(self, length: int) -> list[list[int]]:
        """Indices of the segments of a ``length``-sample signal, grouped by segment length (so that each
        group runs as one batch) and cut into groups of at most ``segment_batch`` segments."""
        by_length: dict[int, list[int]] = {}
        for i, (start, end) in enumerate(segment_bounds(self.cfg, length)):
            by_length.setdefault(end - start, []).append(i)
        n = max(1, self.segment_batch)
        return [idx[j : j + n] for idx in by_length.values() for j in range(0, len(idx), n)]

    def encode(self, x: torch.Tensor, n_q: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes ``[B, n_q, frames]`` for audio ``[B, C, T]`` and, when normalising, scales ``[B, segments]``.

        Segments of equal length run through the encoder up to ``segment_batch`` at a time (the items of
        a segment consecutive in the batch).
        """
        bounds = segment_bounds(self.cfg, x.shape[-1])
        b = x.shape[0]
        codes: list[torch.Tensor] = [x.new_empty(0)] * len(bounds)
        scales: list[torch.Tensor | None] = [None] * len(bounds)
        for group in self.segment_groups(x.shape[-1]):
            parts = [x[..., bounds[i][0] : bounds[i][1]] for i in group]
            segs = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)  # [S*B, C, n]
            emb, scale = self.embed_segment(segs)
            c = self.quantizer.encode(emb, n_q)
            for j, i in enumerate(group):
                codes[i] = c[j * b : (j + 1) * b]
                scales[i] = None if scale is None else scale[j * b : (j + 1) * b]
        scale_t = torch.cat(scales, dim=1) if self.cfg.normalize else None  # type: ignore[arg-type]
        return torch.cat(codes, dim=-1), scale_t

    def embed_items(self, items: Sequence[torch.Tensor], lstm_batch: int) -> list[list[Embedded]]:
        """Embeddings ``[1, D, frames]`` and scale of each segment of each item ``[C, T_i]``, with the
        encoder's LSTM run over up to ``lstm_batch`` (at least 2) pieces at once (CPU corpus encoding).

        A piece (an item, or a 48 kHz segment) runs alone through the convolutions before the LSTM (in
        blocks, as :meth:`embed_blocked`); pieces sorted by length then share LSTM calls, zero-padded at
        the end (the LSTM runs forward in time, so padding changes no earlier output); each piece then
        runs alone through the last layers. A batch-1 LSTM is memory-bound on CPU (each time step reads
        the whole 4 MiB recurrent matrix for one row); 8 rows cost 2.4x one, not 8x.

        Exactness: oneDNN's LSTM gives a row the same floats in batches of 2 or more, whatever the other
        rows and the padded length (measured on this project's CPU with up to 64 rows and 1-2 threads:
        ``tests/test_lstm_batch.py``), but a batch of one takes another kernel whose floats differ by
        about 1e-7. A lone piece therefore runs beside a zero row (``lstm_batch`` below 2 runs as 2):
        each item's embeddings are the same whichever items share its calls, and may differ from
        :meth:`encode`'s (a batch of one, as the references) by about 1e-7, which flips a code only at a
        near-tie.

        Pieces longer than :attr:`lstm_batch_max_seconds` run alone, exactly as :meth:`embed_segment`
        (in 2 s blocks), so that memory stays bounded: a whole-length LSTM call precomputes its input
        products for every time step (4 x 512 floats per frame and row). That choice depends only on the
        piece's own length, so it too is the same whatever the batch.
        """
        head, lstm, tail = self.encoder.split_at_lstm()
        pieces = [
            (i, x[None, :, start:end])
            for i, x in enumerate(items)
            for start, end in segment_bounds(self.cfg, x.shape[-1])
        ]
        out: list[list[Embedded]] = [[] for _ in items]
        results: list[Embedded | None] = [None] * len(pieces)
        longest = int(self.lstm_batch_max_seconds * self.cfg.sampling_rate)
        for p, (_, x) in enumerate(pieces):
            if x.shape[-1] > longest:
                results[p] = self.embed_segment(x)
        order = sorted(
            (p for p in range(len(pieces)) if results[p] is None), key=lambda p: pieces[p][1].shape[-1]
        )
        size = max(2, lstm_batch)
        for g in range(0, len(order), size):
            group = order[g : g + size]
            feats, scales = [], []
            for p in group:
                x, scale = self.normalized(pieces[p][1])
                feats.append(_run_in_blocks(head, x, self.block_length, self.cfg.sampling_rate))
                scales.append(scale)
            width = max(f.shape[-1] for f in feats)
            batch = feats[0].new_zeros(max(2, len(feats)), feats[0].shape[1], width)
            for row, f in enumerate(feats):
                batch[row, :, : f.shape[-1]] = f[0]
            y, _ = lstm(batch)
            for row, (p, f, scale) in enumerate(zip(group, feats, scales, strict=True)):
                results[p] = (tail(y[row : row + 1, :, : f.shape[-1]].contiguous()), scale)
        for (i, _), r in zip(pieces, results, strict=True):
            assert r is not None
            out[i].append(r)
        return out

    def encode_items(
        self, items: Sequence[torch.Tensor], n_q: int, lstm_batch: int
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Codes ``[n_q, frames]`` and scales ``[segments]`` (None unless normalising) of each item
        ``[C, T_i]``, the LSTM batched across pieces as in :meth:`embed_items`."""
        out = []
        for segments in self.embed_items(items, lstm_batch):
            codes = torch.cat([self.quantizer.encode(emb, n_q)[0] for emb, _ in segments], dim=-1)
            scales = None if not self.cfg.normalize else torch.cat([s.view(1) for _, s in segments])  # type: ignore[union-attr]
            out.append((codes, scales))
        return out

    def decode(self, codes: torch.Tensor, scales: torch.Tensor | None, length: int) -> torch.Tensor:
        """Audio ``[B, C, length]`` from codes ``[B, n_q, frames]`` of a ``length``-sample signal.

        Segments (48 kHz) are overlap-added with the references' triangular weights, normalised by the
        summed weight, into the output as they are decoded: only the output and the segments of one
        call are in memory. (Two segments overlap at most, so the order of the additions does not
        change the floats.)
        """
        bounds = segment_bounds(self.cfg, length)
        b = codes.shape[0]
        first = [0]
        for start, end in bounds:
            first.append(first[-1] + math.ceil((end - start) / self.cfg.hop_length))
        out: torch.Tensor | None = None
        sum_weight: torch.Tensor | None = None
        for group in self.segment_groups(length):
            parts = [codes[..., first[i] : first[i + 1]] for i in group]
            c = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)  # [S*B, n_q, f]
            s = None if scales is None else torch.cat([scales[:, i] for i in group], dim=0)
            seg = self.synthesize(self.quantizer.decode(c), s)
            if len(bounds) == 1:
                return seg[..., :length].contiguous()
            if out is None:  # the weight follows the first segment's decoded length (frames * hop)
                out = seg.new_zeros(b, seg.shape[1], length)  # samples past the end are not kept
                sum_weight = seg.new_zeros(length)
                weight = overlap_weight((first[1] - first[0]) * self.cfg.hop_length, seg.device, seg.dtype)
            assert sum_weight is not None
            for j, i in enumerate(group):
                off = bounds[i][0]
                n = min(seg.shape[-1], length - off)
                out[..., off : off + n] += weight[:n] * seg[j * b : (j + 1) * b, :, :n]
                sum_weight[off : off + n] += weight[:n]
        assert out is not None
        return out.div_(sum_weight)
