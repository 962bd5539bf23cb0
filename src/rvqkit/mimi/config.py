"""Mimi's configuration: the fields of transformers' ``MimiConfig`` that shape the network.

The defaults are the published ``kyutai/mimi`` model: they equal ``transformers.MimiConfig()``'s defaults
and moshi's ``loaders._mimi_config`` (``_seanet_kwargs``, ``_transformer_kwargs``, ``_quantizer_kwargs``),
checked field by field in ``tests/test_mimi_parity.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import WeightsError


@dataclass(frozen=True)
class MimiConfig:
    """Shape of a Mimi model (24 kHz mono, 12.5 Hz frames, 32 codebooks of 2048 entries by default).

    Attributes follow transformers' names; ``channels`` is its ``audio_channels`` and ``codebook_dim``
    its ``vector_quantization_hidden_dimension`` (the two must agree in a Mimi checkpoint).
    """

    sampling_rate: int = 24000
    channels: int = 1
    hidden_size: int = 512
    num_filters: int = 64
    num_residual_layers: int = 1
    upsampling_ratios: tuple[int, ...] = (8, 6, 5, 4)
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    compress: int = 2
    use_conv_shortcut: bool = False
    codebook_size: int = 2048
    codebook_dim: int = 256
    num_quantizers: int = 32
    num_semantic_quantizers: int = 1
    upsample_groups: int = 512
    #: Code frames per encoder (SEANet) frame: the learnt down/upsampling factor (25 Hz -> 12.5 Hz).
    latent_stride: int = 2
    num_hidden_layers: int = 8
    intermediate_size: int = 2048
    num_attention_heads: int = 8
    head_dim: int = 64
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    #: Frames (at the encoder rate, 25 Hz) each attention query sees: itself and 249 before it.
    sliding_window: int = 250

    def __post_init__(self) -> None:
        problems = []
        if self.hidden_size != self.num_attention_heads * self.head_dim:
            problems.append(
                f"hidden_size {self.hidden_size} != num_attention_heads {self.num_attention_heads} "
                f"x head_dim {self.head_dim}"
            )
        if self.head_dim % 2:
            problems.append(f"head_dim {self.head_dim} must be even (rotary embedding)")
        if not 1 <= self.num_semantic_quantizers < self.num_quantizers:
            problems.append(
                f"num_semantic_quantizers {self.num_semantic_quantizers} must be in [1, num_quantizers)"
            )
        if self.latent_stride < 2:
            problems.append(f"latent_stride {self.latent_stride}: rvqkit supports only learnt resampling")
        if self.hidden_size % self.upsample_groups:
            problems.append(f"upsample_groups {self.upsample_groups} must divide hidden_size")
        if self.channels not in (1, 2) or min(self.upsampling_ratios, default=0) < 1:
            problems.append("channels must be 1 or 2 and upsampling_ratios positive")
        if problems:
            raise WeightsError("unsupported Mimi config: " + "; ".join(problems))

    # -- derived ---------------------------------------------------------------------------------------
    @property
    def encoder_hop(self) -> int:
        """Samples per SEANet frame (960 = 25 Hz at 24 kHz)."""
        return math.prod(self.upsampling_ratios)

    @property
    def hop_length(self) -> int:
        """Samples per code frame (1920)."""
        return self.encoder_hop * self.latent_stride

    @property
    def frame_rate(self) -> float:
        """Code frames per second (12.5 Hz)."""
        return self.sampling_rate / self.hop_length

    @property
    def causal(self) -> bool:
        return True

    @property
    def num_codebooks(self) -> int:
        return self.num_quantizers

    @property
    def bits_per_codebook(self) -> int:
        return int(math.log2(self.codebook_size))

    def kbps(self, n_q: int) -> float:
        """Bitrate in kbps of ``n_q`` codebooks (1.1 kbps at 8, 4.4 at 32 for the published model)."""
        return n_q * self.bits_per_codebook * self.frame_rate / 1000

    # -- transformers' config.json ------------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, d: dict[str, Any]) -> MimiConfig:
        """From the fields of a transformers ``config.json`` (``model_type`` ``"mimi"``).

        Settings rvqkit does not implement (non-causal convolutions, another padding mode or activation,
        grouped-query attention, biases in attention) raise :class:`WeightsError` naming the field.
        """
        if not isinstance(d, dict) or d.get("model_type", "mimi") != "mimi":
            kind = d.get("model_type") if isinstance(d, dict) else type(d).__name__
            raise WeightsError(f"not a Mimi config (model_type {kind!r})")
        expect = {
            "use_causal_conv": True,
            "pad_mode": "constant",
            "trim_right_ratio": 1.0,
            "hidden_act": "gelu",
            "attention_bias": False,
        }
        for key, value in expect.items():
            if key in d and d[key] != value:
                raise WeightsError(f"unsupported Mimi config: {key}={d[key]!r} (rvqkit implements {value!r})")
        try:
            hidden = int(d.get("hidden_size", 512))
            heads = int(d.get("num_attention_heads", 8))
            kv_heads = int(d.get("num_key_value_heads", heads) or heads)
            if kv_heads != heads:
                raise WeightsError(
                    f"unsupported Mimi config: num_key_value_heads {kv_heads} != {heads} heads"
                )
            vq_dim = int(d.get("vector_quantization_hidden_dimension", 256))
            codebook_dim = d.get("codebook_dim")
            if codebook_dim is not None and int(codebook_dim) != vq_dim:
                raise WeightsError(
                    f"unsupported Mimi config: codebook_dim {codebook_dim} != "
                    f"vector_quantization_hidden_dimension {vq_dim}"
                )
            rope: dict[str, Any] = d.get("rope_parameters") or {}
            theta_default: float = d.get("rope_theta", 10000.0)
            theta = float(rope.get("rope_theta", theta_default))
            if rope.get("rope_type", "default") != "default":
                raise WeightsError(f"unsupported Mimi config: rope_type {rope.get('rope_type')!r}")
            sr = int(d.get("sampling_rate", 24000))
            ratios = tuple(int(r) for r in (d.get("upsampling_ratios") or (8, 6, 5, 4)))
            # transformers: latent_stride = int(encodec_frame_rate / frame_rate), with frame_rate taken from
            # the config's "frame_rate" when present (older files) and otherwise a stride-2 downsample.
            encodec_rate = math.ceil(sr / math.prod(ratios))
            frame_rate = d.get("frame_rate") or sr / (math.prod(ratios) * 2)
            stride = int(encodec_rate / float(frame_rate))
            return cls(
                sampling_rate=sr,
                channels=int(d.get("audio_channels", 1)),
                hidden_size=hidden,
                num_filters=int(d.get("num_filters", 64)),
                num_residual_layers=int(d.get("num_residual_layers", 1)),
                upsampling_ratios=ratios,
                kernel_size=int(d.get("kernel_size", 7)),
                last_kernel_size=int(d.get("last_kernel_size", 3)),
                residual_kernel_size=int(d.get("residual_kernel_size", 3)),
                dilation_growth_rate=int(d.get("dilation_growth_rate", 2)),
                compress=int(d.get("compress", 2)),
                use_conv_shortcut=bool(d.get("use_conv_shortcut", False)),
                codebook_size=int(d.get("codebook_size", 2048)),
                codebook_dim=vq_dim,
                num_quantizers=int(d.get("num_quantizers", 32)),
                num_semantic_quantizers=int(d.get("num_semantic_quantizers", 1)),
                upsample_groups=int(d.get("upsample_groups", 512)),
                latent_stride=stride,
                num_hidden_layers=int(d.get("num_hidden_layers", 8)),
                intermediate_size=int(d.get("intermediate_size", 2048)),
                num_attention_heads=heads,
                head_dim=int(d.get("head_dim") or hidden // heads),
                norm_eps=float(d.get("norm_eps", 1e-5)),
                rope_theta=theta,
                sliding_window=int(d.get("sliding_window", 250)),
            )
        except (TypeError, ValueError) as e:
            raise WeightsError(f"malformed Mimi config.json: {e}") from e

    @classmethod
    def from_moshi_config(cls, d: dict[str, Any]) -> MimiConfig:
        """From moshi's own config format (``moshi.models.loaders._mimi_config``; a moshi repo's
        ``mimi_config_name`` JSON): ``sample_rate``, ``channels``, ``frame_rate`` and the ``seanet``,
        ``quantizer`` and ``transformer`` keyword dicts. Settings rvqkit does not implement raise
        :class:`WeightsError` naming them."""
        try:
            seanet, quant, tr = d["seanet"], d["quantizer"], d["transformer"]
            expect = [
                ("seanet.causal", seanet.get("causal", True), True),
                ("seanet.pad_mode", seanet.get("pad_mode", "constant"), "constant"),
                ("seanet.activation", seanet.get("activation", "ELU"), "ELU"),
                ("transformer.causal", tr.get("causal", True), True),
                ("transformer.norm", tr.get("norm", "layer_norm"), "layer_norm"),
                ("transformer.gating", tr.get("gating", "none"), "none"),
                ("transformer.positional_embedding", tr.get("positional_embedding", "rope"), "rope"),
                ("transformer.kv_repeat", tr.get("kv_repeat", 1), 1),
            ]
            for name, value, want in expect:
                if value != want:
                    raise WeightsError(
                        f"unsupported moshi Mimi config: {name}={value!r} (rvqkit implements {want!r})"
                    )
            dim = int(seanet["dimension"])
            ratios = tuple(int(r) for r in seanet["ratios"])
            sr = int(d.get("sample_rate", 24000))
            heads = int(tr["num_heads"])
            return cls(
                sampling_rate=sr,
                channels=int(d.get("channels", seanet.get("channels", 1))),
                hidden_size=dim,
                num_filters=int(seanet["n_filters"]),
                num_residual_layers=int(seanet.get("n_residual_layers", 1)),
                upsampling_ratios=ratios,
                kernel_size=int(seanet.get("kernel_size", 7)),
                last_kernel_size=int(seanet.get("last_kernel_size", 7)),
                residual_kernel_size=int(seanet.get("residual_kernel_size", 3)),
                dilation_growth_rate=int(seanet.get("dilation_base", 2)),
                compress=int(seanet.get("compress", 2)),
                use_conv_shortcut=not bool(seanet.get("true_skip", True)),
                codebook_size=int(quant["bins"]),
                codebook_dim=int(quant["dimension"]),
                num_quantizers=int(quant["n_q"]),
                num_semantic_quantizers=int(quant.get("n_q_semantic", 1)),
                upsample_groups=dim,  # moshi's ConvTrUpsample1d(channel_wise=True): depthwise
                latent_stride=round(sr / math.prod(ratios) / float(d.get("frame_rate", 12.5))),
                num_hidden_layers=int(tr["num_layers"]),
                intermediate_size=int(tr["dim_feedforward"]),
                num_attention_heads=heads,
                head_dim=int(tr["d_model"]) // heads,
                rope_theta=float(tr.get("max_period", 10000)),
                sliding_window=int(tr["context"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"malformed moshi Mimi config: {type(e).__name__} {e}") from e

    def to_hf_config(self) -> dict[str, Any]:
        """The transformers ``config.json`` fields of this config (``MimiConfig(**fields)`` rebuilds it)."""
        d = asdict(self)
        d["audio_channels"] = d.pop("channels")
        d["upsampling_ratios"] = list(self.upsampling_ratios)
        d["vector_quantization_hidden_dimension"] = self.codebook_dim
        d["num_key_value_heads"] = self.num_attention_heads
        d["rope_parameters"] = {"rope_theta": self.rope_theta, "rope_type": "default"}
        del d["rope_theta"], d["latent_stride"]
        if self.latent_stride != 2:  # transformers assumes a stride-2 downsample unless told the frame rate
            d["frame_rate"] = self.frame_rate
        d.update(
            model_type="mimi",
            architectures=["MimiModel"],
            use_causal_conv=True,
            pad_mode="constant",
            trim_right_ratio=1.0,
            hidden_act="gelu",
            attention_bias=False,
        )
        return d


#: The published kyutai/mimi model (transformers' and moshi's defaults).
KYUTAI_MIMI = MimiConfig()
