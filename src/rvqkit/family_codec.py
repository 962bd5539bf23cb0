"""One small front for the Mimi, DAC and SNAC models: user audio at any rate in, codes out, and back.

:func:`rvqkit.families.load_family_model` returns one of these. Each wraps its family's own model and
calls that model's exact per-item paths (``MimiModel.encode`` with per-item ``lengths``,
``DacModel.encode_items`` / ``decode``, ``SnacModel.encode_items`` / ``decode`` with the noise off), so
the codes are bit for bit those of the family model on the same (resampled) signal.

User audio goes through :meth:`rvqkit.codec.Codec.prepare`, the same checks and conversions as EnCodec's
:meth:`~rvqkit.codec.Codec.encode` (NaN, empty, ``[samples, channels]`` layout, integer PCM, channel
mixing, soxr resampling to the model's rate): one rule for every family.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .codec import AudioInput, Codec
from .errors import AudioError, CodesError

#: Codes of one item: ``Tensor[n_q, frames]`` (int64), or for SNAC a list of ``Tensor[frames_i]`` per
#: level, coarsest first.
Codes = Any


class FamilyCodec:
    """A loaded Mimi, DAC or SNAC model with one interface (subclasses fill in the model calls).

    Attributes: ``family`` ("mimi", "dac" or "snac"), ``model`` (the family's ``nn.Module``),
    ``config`` (its config), ``source`` (what it was loaded from), ``device``.
    """

    family: str = ""

    def __init__(self, model: torch.nn.Module, config: Any, source: str, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        # Any: each subclass calls its own family's model methods (MimiModel, DacModel, SnacModel)
        self.model: Any = model.to(self.device).eval()
        self.config = config
        self.source = source

    # -- facts -------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """The model's sample rate in Hz (audio is resampled to it)."""
        return int(self.config.sampling_rate)

    @property
    def channels(self) -> int:
        """Audio channels the model takes (1 for every published Mimi, DAC and SNAC model)."""
        return int(self.config.channels)

    @property
    def frame_rate(self) -> float:
        """Code frames per second (Hz) at the finest rate."""
        return float(self.config.frame_rate)

    @property
    def num_codebooks(self) -> int:
        """Codebooks (SNAC: levels) of the model; ``n_q`` ranges from 1 to this."""
        return int(self.config.num_codebooks)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(family={self.family!r}, sample_rate={self.sample_rate} Hz, "
            f"frame_rate={self.frame_rate:g} Hz, num_codebooks={self.num_codebooks}, source={self.source!r})"
        )

    # -- encode / decode -----------------------------------------------------------------------------------
    def prepare(self, audio: AudioInput, sample_rate: int) -> list[torch.Tensor]:
        """User audio to float32 ``[channels, samples]`` items at :attr:`sample_rate`: EnCodec's own
        :meth:`Codec.prepare` (it reads only ``channels`` and ``sample_rate`` from its instance)."""
        return Codec.prepare(self, audio, sample_rate)  # type: ignore[arg-type]  # duck-typed: reads only channels, sample_rate

    def encode(self, audio: AudioInput, sample_rate: int, n_q: int | None = None) -> Codes:
        """Codes of one item ``[samples]`` or ``[channels, samples]`` (numpy or torch, float or integer
        PCM) at ``sample_rate`` Hz (any rate: resampled to :attr:`sample_rate`). ``n_q``: codebooks (SNAC:
        levels), all by default. Returns ``Tensor[n_q, frames]`` int64 (SNAC: a list of
        ``Tensor[frames_i]``, coarsest first), on the CPU."""
        items = self.prepare(audio, sample_rate)
        if len(items) != 1:
            raise AudioError(f"encode takes one item ([samples] or [channels, samples]); got {len(items)}")
        return self._encode_items(items, n_q)[0]

    def encode_items(self, items: AudioInput, sample_rate: int, n_q: int | None = None) -> list[Codes]:
        """Codes of each item of a list (or ``[batch, channels, samples]`` array), each exactly as
        :meth:`encode` of that item alone (through the family's batch-exact path)."""
        return self._encode_items(self.prepare(items, sample_rate), n_q)

    @torch.inference_mode()
    def decode(self, codes: Codes, length: int | None = None) -> torch.Tensor:
        """Audio ``Tensor[channels, samples]`` float32 at :attr:`sample_rate`, on the CPU, from one item's
        codes as :meth:`encode` returns them. ``samples`` is the model's output for those frames (whole
        frames), or ``length`` (samples) if given: cut, or zero-filled past the model's output."""
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 0):
            raise AudioError(f"length must be an integer >= 0 (samples), got {length!r}")
        audio = self._decode(codes).float().cpu()
        if length is None:
            return audio
        if length <= audio.shape[-1]:
            return audio[..., :length].contiguous()
        return torch.nn.functional.pad(audio, (0, length - audio.shape[-1]))

    # -- inside the quantizer (rvqkit inspect) --------------------------------------------------------------
    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The unquantized latent ``[1, dim, frames]`` of one item ``[channels, samples]`` at
        :attr:`sample_rate` (the quantizer's input space; Mimi, DAC)."""
        raise CodesError(f"{self.family} has no single-rate latent to walk (its levels run at several rates)")

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """The latent ``[1, dim, frames]`` that the first ``k`` codebooks of one item's codes ``[k, frames]``
        stand for (the sum of their entries, in the space of :meth:`latent`)."""
        raise CodesError(f"{self.family} has no single-rate latent to walk (its levels run at several rates)")

    # -- per family ------------------------------------------------------------------------------------------
    def _encode_items(self, items: list[torch.Tensor], n_q: int | None) -> list[Codes]:
        raise NotImplementedError

    def _decode(self, codes: Codes) -> torch.Tensor:
        raise NotImplementedError


def _code_matrix(codes: object) -> torch.Tensor:
    """One item's codes as ``[1, n_q, frames]`` on no particular device (CodesError unless 2-D)."""
    if not isinstance(codes, torch.Tensor):
        try:
            codes = torch.as_tensor(codes)
        except (TypeError, ValueError, RuntimeError) as e:
            raise CodesError(f"codes must be a tensor [n_q, frames], got {type(codes).__name__}") from e
    if codes.ndim != 2:
        raise CodesError(f"codes must be a tensor [n_q, frames] (one item), got shape {tuple(codes.shape)}")
    return codes[None]


class MimiCodec(FamilyCodec):
    family = "mimi"

    @torch.inference_mode()
    def _encode_items(self, items: list[torch.Tensor], n_q: int | None) -> list[Codes]:
        # MimiModel.encode with per-item lengths runs each row alone (batched=False): bit for bit encode(item)
        lengths = [x.shape[-1] for x in items]
        batch = torch.zeros(len(items), self.channels, max(lengths), device=self.device)
        for i, x in enumerate(items):
            batch[i, :, : x.shape[-1]] = x.to(self.device)
        codes = self.model.encode(batch, n_q, lengths=torch.tensor(lengths)).cpu()
        return [codes[i, :, : self.model.frames_for_length(n)].clone() for i, n in enumerate(lengths)]

    def _decode(self, codes: Codes) -> torch.Tensor:
        return self.model.decode(_code_matrix(codes).to(self.device))[0]

    @torch.inference_mode()
    def latent(self, x: torch.Tensor) -> torch.Tensor:
        # after the encoder transformer and the 12.5 Hz downsampling: the split RVQ's input
        return self.model.latent(x[None].to(self.device)).cpu()

    @torch.inference_mode()
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.quantizer.decode(_code_matrix(codes).to(self.device)).cpu()


class DacCodec(FamilyCodec):
    family = "dac"

    @torch.inference_mode()
    def _encode_items(self, items: list[torch.Tensor], n_q: int | None) -> list[Codes]:
        return [c.cpu() for c in self.model.encode_items([x.to(self.device) for x in items], n_q)]

    def _decode(self, codes: Codes) -> torch.Tensor:
        return self.model.decode(_code_matrix(codes).to(self.device))[0]

    @torch.inference_mode()
    def latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x[None].to(self.device)).cpu()

    @torch.inference_mode()
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.quantizer.decode(_code_matrix(codes).to(self.device)).cpu()


class SnacCodec(FamilyCodec):
    family = "snac"

    @torch.inference_mode()
    def _encode_items(self, items: list[torch.Tensor], n_q: int | None) -> list[Codes]:
        out = self.model.encode_items([x.to(self.device) for x in items], n_q)
        return [[c.cpu() for c in levels] for levels in out]

    def _decode(self, codes: Codes) -> torch.Tensor:
        if not isinstance(codes, Sequence) or isinstance(codes, torch.Tensor):
            raise CodesError("SNAC codes must be a list of level tensors [frames_i], coarsest first")
        levels = []
        for i, c in enumerate(codes):
            if not isinstance(c, torch.Tensor) or c.ndim != 1:
                what = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
                raise CodesError(f"SNAC codes level {i} must be a tensor [frames_i], got {what}")
            levels.append(c[None].to(self.device))
        return self.model.decode(levels)[0]  # noise "off": deterministic (docs/snac.md)


CLASSES: dict[str, type[FamilyCodec]] = {"mimi": MimiCodec, "dac": DacCodec, "snac": SnacCodec}
