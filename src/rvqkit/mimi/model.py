"""The Mimi network: SEANet encoder → transformer → learnt downsampling (25 → 12.5 Hz) → split RVQ, and
back: split RVQ → learnt upsampling → transformer → SEANet decoder. Offline and exact streaming.

Shapes: audio ``[B, channels, samples]`` at 24 kHz, codes ``[B, n_q, frames]`` (int64, 12.5 Hz, semantic
codebook first). The offline arithmetic is transformers' ``MimiModel`` (5.24), op for op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import AudioError, BandwidthError, CodesError
from .config import MimiConfig
from .conv import MimiConv1d, MimiConvState, MimiConvTranspose1d, MimiConvTransposeState
from .quantizer import MimiSplitRVQ
from .seanet import MimiSEANetDecoder, MimiSEANetEncoder, MimiSequentialState
from .transformer import MimiTransformer, TransformerState


@dataclass
class MimiEncoderState:
    """Streaming state of the encoder half (all tensors batch-first)."""

    seanet: MimiSequentialState
    transformer: TransformerState
    downsample: MimiConvState
    finished: bool = False


@dataclass
class MimiDecoderState:
    """Streaming state of the decoder half (all tensors batch-first)."""

    upsample: MimiConvTransposeState
    transformer: TransformerState
    seanet: MimiSequentialState
    finished: bool = False


@dataclass
class MimiState:
    """One streaming session's state: :meth:`MimiModel.encode_step` uses ``encoder``,
    :meth:`MimiModel.decode_step` uses ``decoder`` (they are independent)."""

    encoder: MimiEncoderState
    decoder: MimiDecoderState


class MimiModel(nn.Module):
    """Mimi for one :class:`MimiConfig`. Load weights with :func:`rvqkit.mimi.load_mimi`."""

    def __init__(self, config: MimiConfig) -> None:
        super().__init__()
        cfg = self.config = config
        self.encoder = MimiSEANetEncoder(cfg)
        self.encoder_transformer = MimiTransformer(cfg)
        s = cfg.latent_stride
        self.downsample = MimiConv1d(
            cfg.hidden_size, cfg.hidden_size, 2 * s, s, bias=False, pad_mode="replicate"
        )
        self.quantizer = MimiSplitRVQ(cfg)
        self.upsample = MimiConvTranspose1d(
            cfg.hidden_size, cfg.hidden_size, 2 * s, s, groups=cfg.upsample_groups, bias=False
        )
        self.decoder_transformer = MimiTransformer(cfg)
        self.decoder = MimiSEANetDecoder(cfg)
        #: Where the weights came from (a ``rvqkit.mimi.loading.LoadedMimi``), set by ``load_mimi``.
        self.loaded: object | None = None
        #: Signals longer than this (seconds) are encoded and decoded in blocks of ``block_seconds``
        #: through the streaming path, so that memory stays bounded (a whole 10-minute signal's first
        #: activations alone are 3.7 GB); up to it the whole signal runs at once, as transformers does.
        #: Blocks are exact to float rounding, as streaming (docs/mimi.md). None: always whole.
        self.whole_max_seconds: float | None = 60.0
        self.block_seconds = 10.0

    # -- the family interface ----------------------------------------------------------------------------
    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def _weight(self) -> torch.Tensor:
        """A parameter, for the model's device and dtype."""
        return self.downsample.conv.weight

    def _blocked(self, samples: int) -> bool:
        return self.whole_max_seconds is not None and samples > self.whole_max_seconds * self.sampling_rate

    def frames_for_length(self, length: int) -> int:
        """Code frames for ``length`` samples: ``ceil(length / 1920)`` (each layer pads its end)."""
        return math.ceil(length / self.config.hop_length)

    def _check_audio(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[1] != self.config.channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AudioError(
                f"audio must be a float tensor [batch, {self.config.channels}, samples], got {shape}"
            )
        if not x.is_floating_point():
            raise AudioError(f"audio must be floats, got dtype {x.dtype}")

    def _check_n_q(self, n_q: int | None) -> int:
        n = self.config.num_quantizers if n_q is None else n_q
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.config.num_quantizers:
            raise BandwidthError(
                f"n_q must be an integer from 1 to {self.config.num_quantizers}, got {n_q!r}"
            )
        return n

    # -- offline -----------------------------------------------------------------------------------------
    def latent(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The unquantized latent ``[B, hidden, frames]`` (12.5 Hz) of audio ``[B, C, T]``.

        ``lengths`` (samples, ``[B]``): each row is then computed as if it were alone and ``lengths[i]``
        long (see :meth:`encode`).
        """
        if lengths is None:
            h = self.encoder(x)
            h = self.encoder_transformer(h.transpose(1, 2)).transpose(1, 2)
            return self.downsample(h)
        h = x
        n = lengths.to(x.device)
        for layer in self.encoder.layers:
            if isinstance(layer, MimiConv1d) and layer.stride > 1:
                h = _zero_past(h, n)  # the row's own end padding (zeros), as alone
                n = torch.div(n + layer.stride - 1, layer.stride, rounding_mode="floor")
            h = layer(h)
        h = self.encoder_transformer(h.transpose(1, 2)).transpose(1, 2)
        return self.downsample(_replicate_past(h, n, self.downsample.stride))

    def encode(
        self,
        x: torch.Tensor,
        n_q: int | None = None,
        lengths: torch.Tensor | None = None,
        batched: bool = False,
    ) -> torch.Tensor:
        """Codes ``[B, n_q, ceil(T / 1920)]`` (int64) of audio ``[B, C, T]``; ``n_q`` defaults to all 32.

        ``lengths`` (samples, ``[B]``): ``x`` is a right-padded batch of items of different lengths, and
        row i gets the codes of ``x[i, :, :lengths[i]]`` encoded alone; frames at or past
        ``frames_for_length(lengths[i])`` are filled with -1.

        - ``batched=False`` (default): each item runs alone, so its codes are bit for bit those of
          ``encode(item)``. PyTorch's CPU convolutions round differently with another batch size or
          width, so this is the only way to be exact on any machine; on CPU it costs little (a
          convolution parallelises within one item).
        - ``batched=True``: one call for the whole padded batch, for GPUs. Each row's end padding is
          reproduced (before every strided convolution, the row's activations past its own length are
          set to what its end padding would be alone: zeros, or its last frame for the downsampling),
          and Mimi is causal, so nothing of another item's length reaches a row; the floats differ from
          the item alone by float rounding (~1e-6), which changes a code only at a near-tie.
        """
        self._check_audio(x)
        n_q = self._check_n_q(n_q)
        if lengths is None:
            if not self._blocked(x.shape[-1]):
                return self.quantizer.encode(self.latent(x), n_q)
            state, block = self.init_state(x.shape[0]), int(self.block_seconds * self.sampling_rate)
            starts = range(0, x.shape[-1], block)
            parts = [
                self.encode_step(x[..., i : i + block], state, i + block >= x.shape[-1], n_q) for i in starts
            ]
            return torch.cat(parts, dim=-1)
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        if lengths.shape != (x.shape[0],) or int(lengths.min()) < 0 or int(lengths.max()) > x.shape[-1]:
            raise AudioError(f"lengths must be [batch] sample counts within the {x.shape[-1]} samples given")
        frames = [self.frames_for_length(int(n)) for n in lengths]
        if batched:
            codes = self.quantizer.encode(self.latent(x, lengths), n_q)
        else:
            codes = torch.full((x.shape[0], n_q, self.frames_for_length(x.shape[-1])), -1, device=x.device)
            for i, n in enumerate(lengths.tolist()):
                if n:
                    codes[i, :, : frames[i]] = self.encode(x[i : i + 1, :, :n], n_q)[0]
        pad = (
            torch.arange(codes.shape[-1], device=codes.device)
            >= torch.tensor(frames, device=codes.device)[:, None]
        )
        return codes.masked_fill(pad[:, None, :], -1)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Audio ``[B, C, frames * 1920]`` of a latent ``[B, hidden, frames]``."""
        h = self.upsample(latent)
        h = self.decoder_transformer(h.transpose(1, 2)).transpose(1, 2)
        return self.decoder(h)

    def decode(
        self, codes: torch.Tensor, frames: torch.Tensor | None = None, batched: bool = False
    ) -> torch.Tensor:
        """Audio ``[B, C, frames * 1920]`` (float32) of codes ``[B, n_q, frames]``.

        ``frames`` (``[B]``): row i holds ``frames[i]`` real frames, the rest padding (any value, e.g. the
        -1 of :meth:`encode`), and gets the audio of its frames decoded alone, zeros after
        ``frames[i] * 1920`` samples. As in :meth:`encode`, items run one by one (bit-exact) unless
        ``batched=True`` (one call; Mimi's decoder is causal, so padding frames change none of a row's
        samples beyond float rounding).
        """
        if frames is None:
            self.quantizer.check_codes(codes)
            if not self._blocked(codes.shape[-1] * self.hop_length):
                return self.decode_latent(self.quantizer.decode(codes))
            state, block = (
                self.init_state(codes.shape[0]),
                max(1, int(self.block_seconds * self.config.frame_rate)),
            )
            starts = range(0, codes.shape[-1], block)
            parts = [
                self.decode_step(codes[..., i : i + block], state, i + block >= codes.shape[-1])
                for i in starts
            ]
            return torch.cat(parts, dim=-1)
        frames = torch.as_tensor(frames, dtype=torch.long, device=codes.device)
        if frames.shape != codes.shape[:1] or int(frames.min()) < 0 or int(frames.max()) > codes.shape[-1]:
            raise CodesError(f"frames must be [batch] frame counts within the {codes.shape[-1]} frames given")
        pad = torch.arange(codes.shape[-1], device=codes.device) >= frames[:, None]
        codes = codes.masked_fill(pad[:, None, :], 0)
        self.quantizer.check_codes(codes)
        if batched:
            audio = self.decode_latent(self.quantizer.decode(codes))
            samples = frames.to(audio.device) * self.hop_length
            return audio.masked_fill(
                torch.arange(audio.shape[-1], device=audio.device) >= samples[:, None, None], 0
            )
        audio = self._weight().new_zeros(
            codes.shape[0], self.config.channels, codes.shape[-1] * self.hop_length
        )
        for i, f in enumerate(frames.tolist()):
            if f:
                audio[i, :, : f * self.hop_length] = self.decode(codes[i : i + 1, :, :f])[0]
        return audio

    # -- streaming ---------------------------------------------------------------------------------------
    def init_state(self, batch: int) -> MimiState:
        """A fresh streaming state for ``batch`` independent streams (start of signal)."""
        device = self._weight().device
        return MimiState(
            MimiEncoderState(
                self.encoder.init_state(batch),
                self.encoder_transformer.init_state(batch, device),
                self.downsample.init_state(batch),
            ),
            MimiDecoderState(
                self.upsample.init_state(batch),
                self.decoder_transformer.init_state(batch, device),
                self.decoder.init_state(batch),
            ),
        )

    def latent_step(self, x: torch.Tensor, state: MimiState, final: bool = False) -> torch.Tensor:
        """The unquantized latent ``[B, hidden, k]`` of the frames completed by chunk ``x`` (see
        :meth:`encode_step`, which quantizes it)."""
        self._check_audio(x)
        st = state.encoder
        if st.finished:
            raise AudioError("encode_step after the final chunk: start a new state with init_state()")
        st.finished = final
        h = self.encoder.step(x, st.seanet, final)
        h = self.encoder_transformer.step(h.transpose(1, 2), st.transformer).transpose(1, 2)
        return self.downsample.step(h, st.downsample, final)

    def encode_step(
        self, x: torch.Tensor, state: MimiState, final: bool = False, n_q: int | None = None
    ) -> torch.Tensor:
        """Codes ``[B, n_q, k]`` of the frames completed by the next chunk ``x`` ``[B, C, n]`` (any ``n``,
        0 included): a frame is returned as soon as its last sample (1920·(j+1) − 1) has arrived.
        ``final=True`` marks the end of the signal: the end is padded as :meth:`encode` pads it, and the
        frames returned over the whole stream are :meth:`encode`'s (see docs/mimi.md for exactness)."""
        n_q = self._check_n_q(n_q)
        latent = self.latent_step(x, state, final)
        if latent.shape[-1] == 0:
            return torch.empty(x.shape[0], n_q, 0, dtype=torch.long, device=x.device)
        return self.quantizer.encode(latent, n_q)

    def decode_step(self, codes: torch.Tensor, state: MimiState, final: bool = False) -> torch.Tensor:
        """Audio ``[B, C, k * 1920]`` of the next ``k`` code frames ``[B, n_q, k]`` (``k`` may be 0). Each
        frame's samples are final at once (the decoder is causal with no look-ahead); the concatenated
        output equals :meth:`decode` of all the codes (see docs/mimi.md for exactness)."""
        st = state.decoder
        if st.finished:
            raise CodesError("decode_step after the final frames: start a new state with init_state()")
        st.finished = final
        if codes.ndim == 3 and codes.shape[-1] == 0:
            return self._weight().new_zeros(codes.shape[0], self.config.channels, 0)
        self.quantizer.check_codes(codes)
        h = self.upsample.step(self.quantizer.decode(codes), st.upsample, final)
        h = self.decoder_transformer.step(h.transpose(1, 2), st.transformer).transpose(1, 2)
        return self.decoder.step(h, st.seanet, final)


def _zero_past(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``h`` ``[B, C, T]`` with row i's frames at or past ``lengths[i]`` set to 0."""
    if bool((lengths >= h.shape[-1]).all()):
        return h
    past = torch.arange(h.shape[-1], device=h.device)[None, :] >= lengths[:, None]
    return h.masked_fill(past[:, None, :], 0.0)


def _replicate_past(h: torch.Tensor, lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """``h`` with each row's frames past ``lengths[i]`` replaced by its last frame, as far as its own end
    padding (replicate mode) reaches: what the downsampling convolution reads of a row alone."""
    if bool((lengths >= h.shape[-1]).all()):
        return h
    idx = torch.arange(h.shape[-1], device=h.device)[None, :]
    src = torch.minimum(idx, (lengths - 1).clamp(min=0)[:, None])  # [B, T]
    return torch.gather(h, 2, src[:, None, :].expand(-1, h.shape[1], -1))
