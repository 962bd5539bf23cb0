"""Frozen model specifications for EnCodec, and the bandwidth (kbps) to codebook-count rule."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import BandwidthError, WeightsError


@dataclass(frozen=True)
class CodecConfig:
    """Everything that fixes the architecture and the signal framing of an EnCodec model.

    Field names follow the Hugging Face ``EncodecConfig`` so that its ``config.json`` maps one to one.
    """

    name: str = "encodec_24khz"
    sampling_rate: int = 24000  # Hz
    audio_channels: int = 1
    target_bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)  # kbps
    normalize: bool = False  # per-segment RMS scale (48 kHz model)
    chunk_length_s: float | None = None  # segment length in seconds, None = whole signal
    overlap: float | None = None  # fraction of a segment shared with the next one
    hidden_size: int = 128  # embedding dimension
    num_filters: int = 32
    num_residual_layers: int = 1
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)
    norm_type: str = "weight_norm"  # or "time_group_norm"
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "reflect"
    compress: int = 2
    num_lstm_layers: int = 2
    trim_right_ratio: float = 1.0
    codebook_size: int = 1024
    use_conv_shortcut: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def hop_length(self) -> int:
        """Samples per code frame (320 for both published models)."""
        return math.prod(self.upsampling_ratios)

    @property
    def frame_rate(self) -> int:
        """Code frames per second (75 at 24 kHz, 150 at 48 kHz)."""
        return math.ceil(self.sampling_rate / self.hop_length)

    @property
    def num_codebooks(self) -> int:
        """Codebooks the model holds: enough for its largest bandwidth."""
        return int(1000 * self.target_bandwidths[-1] // (self.frame_rate * 10))

    @property
    def segment_length(self) -> int | None:
        """Samples per segment (48000 for the 48 kHz model), or None for whole-signal models."""
        if self.chunk_length_s is None:
            return None
        return int(self.chunk_length_s * self.sampling_rate)

    @property
    def segment_stride(self) -> int | None:
        """Samples between segment starts (47520 for the 48 kHz model)."""
        if self.segment_length is None:
            return None
        return max(1, int((1.0 - (self.overlap or 0.0)) * self.segment_length))

    @property
    def bits_per_codebook(self) -> int:
        return int(math.log2(self.codebook_size))

    def n_q_for_bandwidth(self, bandwidth: float) -> int:
        """Number of codebooks for a bandwidth in kbps; only the model's own bandwidths are accepted."""
        valid = ", ".join(f"{b:g}" for b in self.target_bandwidths)
        try:
            bw = float(bandwidth)
        except (TypeError, ValueError) as e:
            raise BandwidthError(f"bandwidth must be a number in kbps, one of: {valid}") from e
        if not any(math.isclose(bw, b) for b in self.target_bandwidths):
            raise BandwidthError(
                f"{self.name} has no {bw:g} kbps bandwidth; valid bandwidths (kbps): {valid}"
            )
        bw_per_q = self.bits_per_codebook * self.frame_rate
        return int(max(1, math.floor(bw * 1000 / bw_per_q)))

    def bandwidth_for_n_q(self, n_q: int) -> float:
        """Bandwidth in kbps that ``n_q`` codebooks carry."""
        return n_q * self.bits_per_codebook * self.frame_rate / 1000

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d["target_bandwidths"] = list(self.target_bandwidths)
        d["upsampling_ratios"] = list(self.upsampling_ratios)
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], name: str | None = None) -> CodecConfig:
        """Build from a Hugging Face ``EncodecConfig`` ``config.json`` dictionary."""
        if d.get("model_type", "encodec") != "encodec":
            raise WeightsError(f"config.json describes a {d.get('model_type')!r} model, not an EnCodec model")
        known = {f for f in cls.__dataclass_fields__ if f not in ("name", "extra")}
        kwargs: dict[str, Any] = {k: d[k] for k in known if k in d}
        for key in ("target_bandwidths", "upsampling_ratios"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if d.get("codebook_dim") not in (None, d.get("hidden_size", cls.hidden_size)):
            raise WeightsError("codebook_dim different from hidden_size is not supported")
        if kwargs.get("norm_type", "weight_norm") not in ("weight_norm", "time_group_norm"):
            raise WeightsError(f"unsupported norm_type {kwargs['norm_type']!r}")
        if name is None:
            name = f"encodec_{int(kwargs.get('sampling_rate', 24000)) // 1000}khz"
        return cls(name=name, **kwargs)


ENCODEC_24KHZ = CodecConfig()

ENCODEC_48KHZ = CodecConfig(
    name="encodec_48khz",
    sampling_rate=48000,
    audio_channels=2,
    target_bandwidths=(3.0, 6.0, 12.0, 24.0),
    normalize=True,
    chunk_length_s=1.0,
    overlap=0.01,
    norm_type="time_group_norm",
    use_causal_conv=False,
)

PRESETS: dict[str, CodecConfig] = {c.name: c for c in (ENCODEC_24KHZ, ENCODEC_48KHZ)}
