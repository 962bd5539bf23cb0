"""Frozen DAC (Descript Audio Codec) model specifications, read from either published format.

Two formats describe a DAC model: the ``metadata["kwargs"]`` of descript's ``.pth`` (the ``DAC``
constructor's arguments) and the ``config.json`` of a ``transformers`` folder (``DacConfig``). Both map
onto :class:`DacConfig`; :data:`PRESETS` holds the four published models (descript's
``conf/final/*.yml``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import WeightsError

#: descript's ``DAC.__init__`` defaults, used for kwargs a ``.pth`` does not record.
_DAC_DEFAULTS: dict[str, Any] = {
    "encoder_dim": 64,
    "encoder_rates": [2, 4, 8, 8],
    "latent_dim": None,
    "decoder_dim": 1536,
    "decoder_rates": [8, 8, 4, 2],
    "n_codebooks": 9,
    "codebook_size": 1024,
    "codebook_dim": 8,
    "sample_rate": 44100,
}


@dataclass(frozen=True)
class DacConfig:
    """Everything that fixes a DAC model's architecture and framing.

    Field names follow descript's ``DAC`` constructor (``latent_dim`` is always resolved to a number).
    """

    name: str = "dac_44khz"
    sampling_rate: int = 44100  # Hz
    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    latent_dim: int = 1024
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    num_codebooks: int = 9
    codebook_size: int = 1024
    codebook_dim: int = 8

    channels: int = 1  # DAC is mono; stereo is coded as two mono items
    causal: bool = False  # symmetric zero padding in every convolution: no exact streaming

    def __post_init__(self) -> None:
        for field_name in ("sampling_rate", "encoder_dim", "latent_dim", "decoder_dim", "codebook_dim"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise WeightsError(f"DAC config: {field_name} must be a positive integer, got {value!r}")
        if not 1 <= self.num_codebooks <= 1024:
            raise WeightsError(f"DAC config: num_codebooks must be in 1..1024, got {self.num_codebooks}")
        if self.codebook_size < 2 or self.codebook_size & (self.codebook_size - 1):
            raise WeightsError(f"DAC config: codebook_size must be a power of 2, got {self.codebook_size}")
        for field_name in ("encoder_rates", "decoder_rates"):
            rates = getattr(self, field_name)
            if not rates or not all(isinstance(r, int) and r >= 1 for r in rates):
                raise WeightsError(f"DAC config: {field_name} must be positive integers, got {rates!r}")
        if self.decoder_dim % 2 ** len(self.decoder_rates):
            raise WeightsError(
                f"DAC config: decoder_dim {self.decoder_dim} is not divisible by 2**{len(self.decoder_rates)}"
            )

    @property
    def hop_length(self) -> int:
        """Input samples per code frame (512 at 44.1 kHz, 320 at 24 and 16 kHz)."""
        return math.prod(self.encoder_rates)

    @property
    def frame_rate(self) -> float:
        """Code frames per second, exactly ``sampling_rate / hop_length`` (86.13 Hz at 44.1 kHz).

        ``transformers.DacConfig.frame_rate`` rounds this up (87); rvqkit keeps the true rate.
        """
        return self.sampling_rate / self.hop_length

    @property
    def encoder_out_dim(self) -> int:
        """Channels of the encoder's last block: ``encoder_dim * 2**len(encoder_rates)``."""
        return self.encoder_dim * 2 ** len(self.encoder_rates)

    @property
    def bits_per_codebook(self) -> int:
        return int(math.log2(self.codebook_size))

    def bitrate_kbps(self, n_q: int) -> float:
        """Bitrate of ``n_q`` codebooks in kbps (7.75 for 9 codebooks at 44.1 kHz)."""
        return n_q * self.bits_per_codebook * self.frame_rate / 1000

    # -- the published formats ---------------------------------------------------------------------------
    @classmethod
    def from_dac_kwargs(cls, kwargs: Mapping[str, Any], name: str = "dac") -> DacConfig:
        """From a descript ``.pth``'s ``metadata["kwargs"]`` (``DAC.__init__`` arguments; missing ones take
        the constructor's defaults, as descript's loader does)."""
        if not isinstance(kwargs, Mapping):
            raise WeightsError(f"DAC metadata kwargs must be a dict, got {type(kwargs).__name__}")
        kw = {**_DAC_DEFAULTS, **{k: v for k, v in kwargs.items() if k in _DAC_DEFAULTS}}
        encoder_dim, encoder_rates = kw["encoder_dim"], _int_tuple(kw["encoder_rates"], "encoder_rates")
        latent = kw["latent_dim"]
        if latent is None:
            latent = encoder_dim * 2 ** len(encoder_rates)
        return cls(
            name=name,
            sampling_rate=kw["sample_rate"],
            encoder_dim=encoder_dim,
            encoder_rates=encoder_rates,
            latent_dim=latent,
            decoder_dim=kw["decoder_dim"],
            decoder_rates=_int_tuple(kw["decoder_rates"], "decoder_rates"),
            num_codebooks=kw["n_codebooks"],
            codebook_size=kw["codebook_size"],
            codebook_dim=_codebook_dim(kw["codebook_dim"]),
        )

    def to_dac_kwargs(self) -> dict[str, Any]:
        """The ``metadata["kwargs"]`` descript's ``BaseModel.save`` writes for this model."""
        return {
            "encoder_dim": self.encoder_dim,
            "encoder_rates": list(self.encoder_rates),
            "latent_dim": self.latent_dim,
            "decoder_dim": self.decoder_dim,
            "decoder_rates": list(self.decoder_rates),
            "n_codebooks": self.num_codebooks,
            "codebook_size": self.codebook_size,
            "codebook_dim": self.codebook_dim,
            "quantizer_dropout": False,
            "sample_rate": self.sampling_rate,
        }

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any], name: str = "dac") -> DacConfig:
        """From a ``transformers`` ``config.json`` (``DacConfig``: ``model_type`` ``"dac"``).

        ``transformers`` has no ``latent_dim``: the latent is ``encoder_hidden_size * 2**len(ratios)``
        and the decoder's rates are the encoder's reversed (so the 16 kbps 44.1 kHz model has no
        ``transformers`` form).
        """
        if not isinstance(cfg, Mapping):
            raise WeightsError(f"config.json must hold a JSON object, got {type(cfg).__name__}")
        if cfg.get("model_type", "dac") != "dac":
            raise WeightsError(f"config.json is for model_type {cfg.get('model_type')!r}, not a DAC model")
        try:
            enc_dim = cfg.get("encoder_hidden_size", 64)
            rates = _int_tuple(cfg.get("downsampling_ratios", [2, 4, 8, 8]), "downsampling_ratios")
            return cls(
                name=name,
                sampling_rate=cfg.get("sampling_rate", 16000),
                encoder_dim=enc_dim,
                encoder_rates=rates,
                latent_dim=enc_dim * 2 ** len(rates),
                decoder_dim=cfg.get("decoder_hidden_size", 1536),
                decoder_rates=rates[::-1],
                num_codebooks=cfg.get("n_codebooks", 9),
                codebook_size=cfg.get("codebook_size", 1024),
                codebook_dim=_codebook_dim(cfg.get("codebook_dim", 8)),
            )
        except TypeError as e:
            raise WeightsError(f"config.json has a field of the wrong type: {e}") from e

    def to_hf_config(self) -> dict[str, Any]:
        """The ``config.json`` ``transformers.DacModel.save_pretrained`` writes for this model.

        Raises :class:`WeightsError` for models ``transformers`` cannot express (a latent other than
        ``encoder_dim * 2**len(encoder_rates)``, or decoder rates other than the encoder's reversed).
        """
        if self.latent_dim != self.encoder_out_dim or self.decoder_rates != self.encoder_rates[::-1]:
            raise WeightsError(
                f"{self.name}: transformers' DacConfig cannot express latent_dim {self.latent_dim} "
                f"with decoder_rates {list(self.decoder_rates)}"
            )
        return {
            "model_type": "dac",
            "architectures": ["DacModel"],
            "encoder_hidden_size": self.encoder_dim,
            "downsampling_ratios": list(self.encoder_rates),
            "decoder_hidden_size": self.decoder_dim,
            "n_codebooks": self.num_codebooks,
            "codebook_size": self.codebook_size,
            "codebook_dim": self.codebook_dim,
            "quantizer_dropout": 0.0,
            "commitment_loss_weight": 0.25,
            "codebook_loss_weight": 1.0,
            "sampling_rate": self.sampling_rate,
            "torch_dtype": "float32",
        }


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise WeightsError(f"DAC config: {what} must be a list of integers, got {value!r}")
    return tuple(value)


def _codebook_dim(value: Any) -> int:
    """descript allows one ``codebook_dim`` per codebook; every published model uses one value."""
    if isinstance(value, (list, tuple)):
        if not value or len(set(value)) != 1:
            raise WeightsError(f"DAC config: codebook_dim per codebook {value!r} is not supported")
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool):
        raise WeightsError(f"DAC config: codebook_dim must be an integer, got {value!r}")
    return value


DAC_44KHZ = DacConfig()
DAC_24KHZ = DacConfig(
    name="dac_24khz",
    sampling_rate=24000,
    encoder_rates=(2, 4, 5, 8),
    decoder_rates=(8, 5, 4, 2),
    num_codebooks=32,
)
DAC_16KHZ = DacConfig(
    name="dac_16khz",
    sampling_rate=16000,
    encoder_rates=(2, 4, 5, 8),
    decoder_rates=(8, 5, 4, 2),
    num_codebooks=12,
)
DAC_44KHZ_16KBPS = DacConfig(name="dac_44khz_16kbps", latent_dim=128, num_codebooks=18)

#: The published models by name (descript's ``conf/final/{44khz,24khz,16khz,44khz-16kbps}.yml``).
PRESETS: dict[str, DacConfig] = {c.name: c for c in (DAC_44KHZ, DAC_24KHZ, DAC_16KHZ, DAC_44KHZ_16KBPS)}
