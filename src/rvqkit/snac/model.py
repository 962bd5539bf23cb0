"""The SNAC network: encoder → multi-scale RVQ → decoder, for one :class:`SnacConfig`.

Shapes: audio ``[B, 1, samples]`` at the model's rate (float32); codes a list of ``[B, frames_i]`` int64
tensors, coarsest level first, ``frames_i = frames / vq_strides[i]`` (``frames`` at the finest rate).

Padding: an input is right-zero-padded to a multiple of :attr:`SnacConfig.pad_multiple` samples (hop
length times ``lcm(vq_strides[0], attn_window_size or 1)``), as snac's ``preprocess``. The model is not
causal: every code depends on audio on both sides, and on where the padded input ends. So a right-padded
batch of items of different lengths does not give each item its own codes; :meth:`SnacModel.encode_items`
encodes each item at its own padded length instead.

Noise: snac's decoder adds random noise in every decoder block, also in eval mode, so its decoded
audio changes from call to call. Here ``decode(noise="off")`` (the default) leaves it out, and
``decode(noise="seeded", generator=...)`` draws it exactly as the reference does (see :meth:`decode`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..errors import AudioError, CodesError
from .config import SnacConfig
from .layers import Decoder, Encoder, NoiseSource
from .quantizer import ResidualVectorQuantize

NoiseMode = Literal["off", "seeded"]


class SnacModel(nn.Module):
    """rvqkit's SNAC: snac 1.2.1's network with weight norm folded and deterministic decoding by default."""

    def __init__(self, config: SnacConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(
            config.encoder_dim, config.encoder_rates, config.depthwise, config.attn_window_size
        )
        self.quantizer = ResidualVectorQuantize(
            config.latent, config.codebook_size, config.codebook_dim, config.vq_strides
        )
        self.decoder = Decoder(
            config.latent,
            config.decoder_dim,
            config.decoder_rates,
            config.noise,
            config.depthwise,
            config.attn_window_size,
        )

    # -- lengths -----------------------------------------------------------------------------------
    def padded_length(self, length: int) -> int:
        """Samples after snac's right zero padding of a ``length``-sample input (a multiple of
        :attr:`SnacConfig.pad_multiple`)."""
        m = self.config.pad_multiple
        return -(-length // m) * m

    def frames_for_length(self, length: int) -> int:
        """Code frames at the finest level for ``length`` samples at the model's rate."""
        return self.padded_length(length) // self.config.hop_length

    def level_frames(self, length: int) -> list[int]:
        """Code frames of every level (coarsest first) for ``length`` samples at the model's rate."""
        frames = self.frames_for_length(length)
        return [frames // s for s in self.config.vq_strides]

    # -- encode ------------------------------------------------------------------------------------
    def _check_audio(self, x: object) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AudioError(f"audio must be a tensor [batch, 1, samples] (SNAC is mono), got {shape}")
        if not x.is_floating_point():
            raise AudioError(f"audio must be floating point, got {x.dtype}")
        if x.shape[0] == 0 or x.shape[-1] == 0:
            raise AudioError(f"audio is empty: shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise AudioError("audio contains NaN or infinite values")
        return x

    def _check_n_q(self, n_q: int | None) -> int:
        n = self.config.num_codebooks
        if n_q is None:
            return n
        if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= n:
            raise CodesError(f"n_q must be an integer from 1 to {n} (the model's levels), got {n_q!r}")
        return n_q

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, 1, T]`` right-zero-padded to :meth:`padded_length` samples."""
        return nn.functional.pad(x, (0, self.padded_length(x.shape[-1]) - x.shape[-1]))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder latents ``[B, latent, frames]`` of audio ``[B, 1, samples]`` (padded as snac)."""
        x = self._check_audio(x)
        return self.encoder(self.preprocess(x.float()))

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, n_q: int | None = None) -> list[torch.Tensor]:
        """Codes of audio ``[B, 1, samples]`` at the model's rate: ``n_q`` levels (all by default), coarsest
        first, each ``[B, frames_i]`` int64. The batch is padded as one, as ``snac.SNAC.encode`` does: for
        items of different lengths use :meth:`encode_items`."""
        n_q = self._check_n_q(n_q)
        return self.quantizer.encode(self.embed(x), n_q)

    def encode_items(self, items: Sequence[torch.Tensor], n_q: int | None = None) -> list[list[torch.Tensor]]:
        """Codes of each item (``[1, samples_i]`` or ``[samples_i]``), each encoded alone at its own padded
        length: exactly the codes :meth:`encode` gives the item alone. Returns, per item, its levels'
        ``[frames_i]`` tensors, coarsest first.

        One model call per item: SNAC is not causal, so the zeros of a right-padded batch would change the
        last frames of the shorter items (see docs/snac.md for the count), and equal-length items batched
        together round differently from single items in the matrix products, which can flip a code at a
        near-tie.
        """
        out = []
        for i, item in enumerate(items):
            if (
                not isinstance(item, torch.Tensor)
                or item.dim() not in (1, 2)
                or (item.dim() == 2 and item.shape[0] != 1)
            ):
                shape = tuple(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__
                raise AudioError(f"item {i} must be a tensor [samples] or [1, samples], got {shape}")
            codes = self.encode(item.reshape(1, 1, -1), n_q)
            out.append([c[0] for c in codes])
        return out

    # -- decode ------------------------------------------------------------------------------------
    def check_codes(self, codes: object) -> list[torch.Tensor]:
        """``codes`` as a list of int64 ``[B, frames_i]`` tensors: the first ``n_q`` levels, consistent in
        batch, in frames (``frames_i * vq_strides[i]`` equal) and in range; a :class:`CodesError` otherwise."""
        cfg = self.config
        if not isinstance(codes, list | tuple) or not 1 <= len(codes) <= cfg.num_codebooks:
            got = f"{len(codes)} levels" if isinstance(codes, list | tuple) else type(codes).__name__
            raise CodesError(
                f"codes must be a list of 1 to {cfg.num_codebooks} levels, coarsest first; got {got}"
            )
        out, batch, frames = [], None, None
        for i, c in enumerate(codes):
            if not isinstance(c, torch.Tensor) or c.dim() != 2 or c.is_floating_point() or c.is_complex():
                what = f"{c.dtype} {tuple(c.shape)}" if isinstance(c, torch.Tensor) else type(c).__name__
                raise CodesError(f"codes level {i} must be an integer tensor [batch, frames], got {what}")
            batch = c.shape[0] if batch is None else batch
            frames = c.shape[1] * cfg.vq_strides[i] if frames is None else frames
            if c.shape[0] != batch or c.shape[1] * cfg.vq_strides[i] != frames:
                raise CodesError(
                    f"codes level {i} has shape {tuple(c.shape)}; with level 0 it must be "
                    f"[{batch}, {frames // cfg.vq_strides[i]}] (vq_strides {list(cfg.vq_strides)})"
                )
            if c.numel() and (int(c.min()) < 0 or int(c.max()) >= cfg.codebook_size):
                raise CodesError(f"codes level {i} has values outside 0..{cfg.codebook_size - 1}")
            out.append(c.long())
        if batch == 0 or frames == 0:
            raise CodesError("codes are empty")
        assert frames is not None  # codes holds at least one level (checked above)
        window = cfg.attn_window_size
        if window is not None and frames % window:
            raise CodesError(
                f"codes must cover a multiple of {window} finest frames (the attention window), got {frames}"
            )
        return out

    @staticmethod
    def _noise_source(
        noise: str, generator: torch.Generator | int | None, device: torch.device
    ) -> NoiseSource:
        if noise == "off":
            if generator is not None:
                raise ValueError('generator is only used with noise="seeded"')
            return None
        if noise != "seeded":
            raise ValueError(f'noise must be "off" or "seeded", got {noise!r}')
        if isinstance(generator, int) and not isinstance(generator, bool):
            return (torch.Generator(device=device).manual_seed(generator),)
        if generator is None or isinstance(generator, torch.Generator):
            return (generator,)
        raise ValueError(f"generator must be a torch.Generator, an integer seed or None, got {generator!r}")

    @torch.inference_mode()
    def decode(
        self,
        codes: Sequence[torch.Tensor],
        noise: NoiseMode = "off",
        generator: torch.Generator | int | None = None,
        length: int | None = None,
    ) -> torch.Tensor:
        """Audio ``[B, 1, frames * hop_length]`` (float32, model rate) from codes (a list of ``[B, frames_i]``,
        coarsest first; a prefix of the levels decodes from the coarse levels alone), cut to ``length``
        samples if given.

        ``noise="off"`` (default): the decoder's NoiseBlocks add nothing, so the audio is a deterministic
        function of the codes. snac always adds the noise; docs/snac.md gives the measured difference.
        ``noise="seeded"``: the noise is drawn as snac draws it, one ``torch.randn((B, 1, T))`` per decoder
        block in order, from ``generator``: None is torch's global generator (so
        ``torch.manual_seed(s); model.decode(codes, noise="seeded")`` gives snac's
        ``torch.manual_seed(s); snac_model.decode(codes)``), an integer a fresh generator seeded with it on
        the model's device (the same numbers), or a ``torch.Generator`` in the state the caller set.
        """
        checked = self.check_codes(codes)
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 0):
            raise AudioError(f"length must be an integer >= 0 (samples), got {length!r}")
        source = self._noise_source(noise, generator, checked[0].device)
        audio = self.decoder(self.quantizer.decode(checked), source)
        return audio if length is None else audio[..., :length]

    def decode_items(
        self,
        items: Sequence[Sequence[torch.Tensor]],
        lengths: Sequence[int] | None = None,
    ) -> list[torch.Tensor]:
        """Audio ``[1, samples_i]`` of each item's codes (its levels' ``[frames_i]`` tensors, as
        :meth:`encode_items` returns them), decoded alone with the noise off and cut to ``lengths[i]``."""
        if lengths is not None and len(lengths) != len(items):
            raise CodesError(f"lengths has {len(lengths)} entries for {len(items)} items")
        out = []
        for i, levels in enumerate(items):
            if not isinstance(levels, list | tuple) or not all(isinstance(c, torch.Tensor) for c in levels):
                raise CodesError(f"item {i} must be a list of code tensors [frames_i], coarsest first")
            audio = self.decode(
                [c.reshape(1, -1) for c in levels], length=None if lengths is None else lengths[i]
            )
            out.append(audio[0])
        return out
