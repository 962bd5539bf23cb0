"""SNAC model configurations: the ``config.json`` the snac package publishes (its constructor's keyword
arguments), frozen and checked, plus the three published models' presets.

Units: ``sampling_rate`` in Hz; ``hop_length`` in samples per code frame at the finest rate;
``frame_rate`` in frames/s at the finest rate; ``vq_strides[i]`` in finest frames per level-``i`` frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import WeightsError

#: Defaults of ``snac.SNAC.__init__`` (snac 1.2.1), used for the keys a ``config.json`` leaves out,
#: exactly as ``SNAC(**config)`` does. They are not a published model.
_CTOR_DEFAULTS: dict[str, Any] = {
    "sampling_rate": 44100,
    "encoder_dim": 64,
    "encoder_rates": [3, 3, 7, 7],
    "latent_dim": None,
    "decoder_dim": 1536,
    "decoder_rates": [7, 7, 3, 3],
    "attn_window_size": 32,
    "codebook_size": 4096,
    "codebook_dim": 8,
    "vq_strides": [8, 4, 2, 1],
    "noise": True,
    "depthwise": True,
}
HEAD_DIM = 64  # LocalMHA's dim_head in snac; the attention width must be a multiple of it


@dataclass(frozen=True)
class SnacConfig:
    """One SNAC model. Field names and meanings are those of the snac package's ``config.json``."""

    sampling_rate: int = 44100
    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (3, 3, 7, 7)
    latent_dim: int | None = None  # None: encoder_dim * 2**len(encoder_rates), as snac
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (7, 7, 3, 3)
    attn_window_size: int | None = 32  # finest frames per local attention window; None: no attention
    codebook_size: int = 4096
    codebook_dim: int = 8
    vq_strides: tuple[int, ...] = (8, 4, 2, 1)  # coarsest level first
    noise: bool = True  # the decoder has NoiseBlocks
    depthwise: bool = True
    name: str = field(default="", compare=False)  # preset name, for messages only

    def __post_init__(self) -> None:
        _check(self)

    # -- the family interface --------------------------------------------------------------------
    @property
    def channels(self) -> int:
        """Audio channels: every SNAC model is mono."""
        return 1

    @property
    def causal(self) -> bool:
        """SNAC's convolutions are centred and its attention windows bidirectional: not causal."""
        return False

    @property
    def hop_length(self) -> int:
        """Samples per code frame at the finest level (the product of ``encoder_rates``)."""
        return math.prod(self.encoder_rates)

    @property
    def decoder_hop(self) -> int:
        """Samples the decoder gives per finest code frame (the product of ``decoder_rates``; equal to
        ``hop_length`` in every published model)."""
        return math.prod(self.decoder_rates)

    @property
    def frame_rate(self) -> float:
        """Frames per second at the finest level (Hz); level ``i`` runs ``vq_strides[i]`` times slower."""
        return self.sampling_rate / self.hop_length

    @property
    def frame_rates(self) -> tuple[float, ...]:
        """Frames per second of each level, coarsest first (Hz)."""
        return tuple(self.frame_rate / s for s in self.vq_strides)

    @property
    def num_codebooks(self) -> int:
        """Number of quantizer levels (one codebook each)."""
        return len(self.vq_strides)

    @property
    def latent(self) -> int:
        """Channels of the encoder output (the quantizer's input)."""
        return (
            self.latent_dim
            if self.latent_dim is not None
            else self.encoder_dim * 2 ** len(self.encoder_rates)
        )

    @property
    def pad_multiple(self) -> int:
        """Inputs are right-zero-padded to a multiple of this many samples:
        ``hop_length * lcm(vq_strides[0], attn_window_size or 1)``, as ``snac.SNAC.preprocess``."""
        return self.hop_length * math.lcm(self.vq_strides[0], self.attn_window_size or 1)

    @property
    def bitrate(self) -> float:
        """Bits per second of all levels' codes (kbps * 1000)."""
        return sum(self.frame_rates) * math.log2(self.codebook_size)

    # -- formats --------------------------------------------------------------------------------------
    @classmethod
    def from_snac_config(cls, cfg: object, where: str = "config.json") -> SnacConfig:
        """The config of a snac ``config.json`` (a dict of ``SNAC.__init__`` keyword arguments; missing keys
        take the constructor's defaults, as ``SNAC(**config)``). Raises :class:`WeightsError` for anything else."""
        if not isinstance(cfg, dict):
            raise WeightsError(f"{where} is not a SNAC config (not a JSON object)")
        if "model_type" in cfg:
            raise WeightsError(
                f"{where} is not a SNAC config (it is a transformers config, model_type {cfg['model_type']!r})"
            )
        unknown = sorted(set(cfg) - set(_CTOR_DEFAULTS))
        if unknown:
            raise WeightsError(f"{where} is not a SNAC config: unknown field {unknown[0]!r}")
        merged = {**_CTOR_DEFAULTS, **cfg}
        for key in ("encoder_rates", "decoder_rates", "vq_strides"):
            value = merged[key]
            if not isinstance(value, list | tuple):
                raise WeightsError(f"{where}: {key} must be a list of integers, got {value!r}")
            merged[key] = tuple(value)
        try:
            return cls(**merged)
        except WeightsError as e:
            raise WeightsError(f"{where}: {e}") from e

    #: the hub's ``config.json`` is the snac format (SNAC has no transformers format)
    from_hf_config = from_snac_config

    def to_snac_config(self) -> dict[str, Any]:
        """This config as the snac package writes ``config.json`` (lists, no preset name)."""
        out = asdict(self)
        del out["name"]
        for key in ("encoder_rates", "decoder_rates", "vq_strides"):
            out[key] = list(out[key])
        return out


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check(c: SnacConfig) -> None:
    for key in ("sampling_rate", "encoder_dim", "decoder_dim", "codebook_size", "codebook_dim"):
        if not _positive_int(getattr(c, key)):
            raise WeightsError(f"{key} must be a positive integer, got {getattr(c, key)!r}")
    for key in ("encoder_rates", "decoder_rates", "vq_strides"):
        value = getattr(c, key)
        if not value or not all(_positive_int(v) for v in value):
            raise WeightsError(f"{key} must be a non-empty list of positive integers, got {list(value)!r}")
    if c.attn_window_size is not None and not _positive_int(c.attn_window_size):
        raise WeightsError(f"attn_window_size must be a positive integer or null, got {c.attn_window_size!r}")
    if not isinstance(c.noise, bool) or not isinstance(c.depthwise, bool):
        raise WeightsError("noise and depthwise must be true or false")
    encoded = c.encoder_dim * 2 ** len(c.encoder_rates)
    if c.latent_dim is not None and c.latent_dim != encoded:
        raise WeightsError(
            f"latent_dim {c.latent_dim!r} does not match the encoder's output, "
            f"encoder_dim * 2**len(encoder_rates) = {encoded}"
        )
    if c.decoder_dim < 2 ** len(c.decoder_rates):
        raise WeightsError(
            f"decoder_dim {c.decoder_dim} is too small for {len(c.decoder_rates)} decoder blocks"
        )
    if c.attn_window_size is not None:
        for what, dim in (("encoder output", encoded), ("decoder_dim", c.decoder_dim)):
            if dim % HEAD_DIM:
                raise WeightsError(f"local attention needs the {what} ({dim}) to be a multiple of {HEAD_DIM}")


HUB_IDS = {
    "snac_24khz": "hubertsiuzdak/snac_24khz",
    "snac_32khz": "hubertsiuzdak/snac_32khz",
    "snac_44khz": "hubertsiuzdak/snac_44khz",
}

#: The published models. 24 kHz: speech, 0.98 kbps, 19.8M parameters, 3 levels at 12/23/47 Hz.
#: 32 and 44.1 kHz: music and sound effects, 54.5M parameters each, 4 levels (hop 384, window 32):
#: 1.9 and 2.6 kbps. The 32/44 kHz fields come from third-party copies of the hub's ``config.json``
#: (the hub files were not readable here); they give the model card's parameter counts, frame rates and
#: bitrates. Loading always reads the checkpoint's own ``config.json``; these serve random models.
PRESETS: dict[str, SnacConfig] = {
    "snac_24khz": SnacConfig(
        sampling_rate=24000,
        encoder_dim=48,
        encoder_rates=(2, 4, 8, 8),
        decoder_dim=1024,
        decoder_rates=(8, 8, 4, 2),
        attn_window_size=None,
        vq_strides=(4, 2, 1),
        name="snac_24khz",
    ),
    "snac_32khz": SnacConfig(
        sampling_rate=32000,
        encoder_dim=64,
        encoder_rates=(2, 3, 8, 8),
        decoder_dim=1536,
        decoder_rates=(8, 8, 3, 2),
        attn_window_size=32,
        vq_strides=(8, 4, 2, 1),
        name="snac_32khz",
    ),
    "snac_44khz": SnacConfig(
        sampling_rate=44100,
        encoder_dim=64,
        encoder_rates=(2, 3, 8, 8),
        decoder_dim=1536,
        decoder_rates=(8, 8, 3, 2),
        attn_window_size=32,
        vq_strides=(8, 4, 2, 1),
        name="snac_44khz",
    ),
}
