"""The DAC network: encoder, residual quantizer, decoder, for one :class:`~rvqkit.dac.config.DacConfig`.

Tensors here are at the model's sample rate, mono. Shapes: audio ``[B, 1, samples]``, codes
``[B, n_q, frames]`` (int64).

DAC is not causal (every convolution is zero-padded on both sides), so it has no exact streaming: a
frame's code depends on about 0.1 s of audio on either side (:attr:`DacModel.receptive_field`), and
right-padding an item to a batch's length changes its last frames. :meth:`DacModel.encode_items`
therefore runs each item at its own length; :mod:`rvqkit.dac.chunked` processes long signals in
overlapping windows with bounded memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AudioError
from .config import DacConfig
from .layers import DacDecoder, DacEncoder
from .quantizer import DacQuantizer, Distance


@dataclass(frozen=True)
class ReceptiveField:
    """How far an output reaches into its input, both ways, in input units (samples for the encoder,
    frames for the decoder), from the layers' kernels, strides, dilations and paddings."""

    left: int
    right: int


def _conv_layers(module: nn.Module) -> list[nn.Conv1d | nn.ConvTranspose1d]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]


def _reach(module: nn.Module) -> tuple[float, float]:
    """(left, right) reach of one output of ``module``'s sequential conv stack, in its input samples.

    Walks the layers from the output back: a conv with kernel k, stride s, dilation d and padding p
    reads inputs ``[s j - p, s j - p + d (k - 1)]`` for output j; a transposed conv's output n reads
    inputs j with ``0 <= n + p - s j <= k - 1``. Residual branches reach no further than their
    convolutions, so summing the reaches of all convolutions in order is an upper bound.
    """
    left = right = 0.0
    for layer in reversed(_conv_layers(module)):
        assert not isinstance(layer.padding, str)  # DAC pads by integers throughout
        (k,), (s,), (d,), (p,) = layer.kernel_size, layer.stride, layer.dilation, layer.padding
        if isinstance(layer, nn.ConvTranspose1d):
            left, right = (left + k - 1 - p) / s, (right + p) / s
        else:
            left, right = left * s + p, right * s + d * (k - 1) - p
    return left, right


class DacModel(nn.Module):
    """DAC: audio ``[B, 1, T]`` ↔ codes ``[B, n_q, frames]``.

    ``distance`` picks the quantizer's nearest-entry formula: ``"descript"`` (the original package, the
    default) or ``"transformers"`` (its ``DacModel``); see :mod:`rvqkit.dac.quantizer`.
    """

    def __init__(self, cfg: DacConfig, distance: Distance = "descript") -> None:
        super().__init__()
        self.config = cfg
        self.distance: Distance = distance
        self.encoder = DacEncoder(cfg)
        self.quantizer = DacQuantizer(cfg.num_codebooks, cfg.latent_dim, cfg.codebook_size, cfg.codebook_dim)
        self.decoder = DacDecoder(cfg)

    # -- the family interface -----------------------------------------------------------------------------
    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def causal(self) -> bool:
        return self.config.causal

    def frames_for_length(self, length: int) -> int:
        """Code frames for ``length`` samples: ``ceil(length / hop_length)`` (the signal is zero-padded on
        the right to a whole number of frames, as descript's ``preprocess`` and ``DacFeatureExtractor``
        do)."""
        return -(-int(length) // self.config.hop_length)

    def decoded_length(self, frames: int) -> int:
        """Samples the decoder gives for ``frames`` frames: ``frames * hop_length`` where every stride is
        even (44.1 kHz), 8 fewer for the 16 and 24 kHz models (a stride-5 transposed convolution with
        kernel 10 and padding 3 gives ``5 n - 1`` samples; descript 1.0.0 and transformers alike)."""
        n = int(frames)
        for s in self.config.decoder_rates:
            n = (n - 1) * s - 2 * math.ceil(s / 2) + 2 * s
        return n

    @property
    def receptive_field(self) -> ReceptiveField:
        """Input samples on each side that a code frame depends on (the encoder's reach); about 4,000
        (0.09 s) at 44.1 kHz."""
        left, right = _reach(self.encoder)
        return ReceptiveField(math.ceil(left), math.ceil(right))

    @property
    def decoder_receptive_field(self) -> ReceptiveField:
        """Code frames on each side that a decoded sample depends on (the decoder's reach)."""
        left, right = _reach(self.decoder)
        return ReceptiveField(math.ceil(left), math.ceil(right))

    # -- encode / decode ------------------------------------------------------------------------------------
    def check_audio(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AudioError(f"DAC takes mono audio [batch, 1, samples], got {shape}")
        if x.shape[-1] == 0:
            raise AudioError("audio is empty (0 samples)")
        if not x.is_floating_point():
            raise AudioError(f"audio must be floating point, got dtype {x.dtype}")

    def pad_to_frames(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` zero-padded on the right to a multiple of ``hop_length`` samples (``x`` itself if it is)."""
        extra = self.frames_for_length(x.shape[-1]) * self.config.hop_length - x.shape[-1]
        return F.pad(x, (0, extra)) if extra else x

    @torch.inference_mode()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder latents ``[B, latent_dim, frames]`` for audio ``[B, 1, T]`` (padded to whole frames)."""
        self.check_audio(x)
        return self.encoder(self.pad_to_frames(x.float()))

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """Codes ``[B, n_q, ceil(T / hop_length)]`` (int64) for audio ``[B, 1, T]`` in [-1, 1] at
        :attr:`sampling_rate` Hz; ``n_q`` (default all) codebooks, ``n_q * 10 * frame_rate`` bits/s.

        Each row is the whole-signal computation of descript's ``DAC.encode`` on the row zero-padded to a
        whole number of frames. Rows of a batch all have length ``T``: for items of other lengths use
        :meth:`encode_items` (right-padding would change an item's last frames).
        """
        n_q = self.config.num_codebooks if n_q is None else n_q
        self.quantizer.check_n_q(n_q)
        return self.quantizer.encode(self.embed(x), n_q, self.distance)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Audio ``[B, 1, samples]`` (float32) for codes ``[B, n_q, frames]``.

        Without ``length``, the decoder's whole output (:meth:`decoded_length` samples). With it, exactly
        ``length`` samples: cut, or, for the 16/24 kHz models whose decoder stops 8 samples short of
        ``frames * hop_length``, zero-filled past the decoder's last sample.
        """
        audio = self.decoder(self.quantizer.decode(codes))
        if length is None:
            return audio
        if length < 0:
            raise ValueError(f"length must be at least 0, got {length}")
        if length <= audio.shape[-1]:
            return audio[..., :length].contiguous()
        return F.pad(audio, (0, length - audio.shape[-1]))

    def encode_items(self, items: Sequence[torch.Tensor], n_q: int | None = None) -> list[torch.Tensor]:
        """Codes ``[n_q, frames_i]`` of each item ``[1, T_i]`` (or ``[T_i]``), each exactly as
        :meth:`encode` of that item alone.

        Each item runs at its own length, one model call per item: DAC's receptive field reaches about
        0.1 s past a frame on both sides, so padding an item to a longer one's length would change its
        last frames (and a batch's rows need not round as a single row does). On CPU one wide item keeps
        both cores busy, so nothing is lost; a batch of short items pays the per-call overhead instead.
        """
        return [self.encode(_as_item(x, i)[None], n_q)[0] for i, x in enumerate(items)]

    def decode_items(
        self, codes: Sequence[torch.Tensor], lengths: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Audio ``[1, n_i]`` of each item's codes ``[n_q, frames_i]``, cut to ``lengths`` if given."""
        if lengths is not None and len(lengths) != len(codes):
            raise ValueError(f"{len(codes)} codes but {len(lengths)} lengths")
        return [self.decode(c[None], None if lengths is None else lengths[i])[0] for i, c in enumerate(codes)]


def _as_item(x: torch.Tensor, index: int) -> torch.Tensor:
    """Item ``index`` as ``[1, T]``: a ``[T]`` tensor gains its channel axis."""
    if isinstance(x, torch.Tensor) and x.ndim == 1:
        return x[None]
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise AudioError(f"item {index}: DAC takes mono items [1, samples] or [samples], got {shape}")
    return x
