"""The three implementations under test, built with identical random weights, behind one interface.

Meta's ``encodec`` model is built with random weights (its codebooks filled from residuals of a test
signal so that codes are diverse), saved as a Meta ``.th`` checkpoint and loaded by rvqkit through its
ordinary loading code; the same tensors are renamed into a ``transformers.EncodecModel``. All three run
under ``torch.inference_mode()``; the references keep their own weight-norm parametrisation (that is how
users run them).
"""

from __future__ import annotations

import hashlib
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
STUBS = REPO / "tests" / "stubs"

#: model key → (sample rate in Hz, channels, seed of the random weights)
MODELS = {"24": (24000, 1, 1234), "48": (48000, 2, 4321)}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), for benchmark reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def import_meta_encodec():
    """Meta's ``encodec`` imports torchaudio at import time; use the tests' stand-in when it is absent."""
    try:
        import torchaudio  # noqa: F401
    except Exception:
        sys.modules.pop("torchaudio", None)
        sys.path.insert(0, str(STUBS))
    import encodec

    return encodec


def make_signal(n: int, channels: int, sr: int, seed: int = 0) -> np.ndarray:
    """Tones, a chirp and noise, ``[channels, n]`` float32 with peak about 0.5 (benchmark input)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64) / sr
    out = []
    for c in range(channels):
        f0 = 110 * (c + 1) * (1 + rng.random())
        x = 0.25 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(
            2 * np.pi * (200 + 2000 * t / max(t[-1], 1e-3)) * t
        )
        out.append(x + 0.05 * rng.standard_normal(n))
    return np.asarray(out, dtype=np.float32)


@torch.no_grad()
def _fill_codebooks(model: Any, seed: int) -> None:
    """Codebook k holds residual frames (plus a little noise) of a test signal after codebooks 0..k-1,
    as k-means initialisation would; random-weight models then use many distinct codes."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(make_signal(model.sample_rate * 4, model.channels, model.sample_rate, seed))[None]
    residual = model.encoder(x / x.pow(2).mean().sqrt())[0].t()  # [frames, D]
    for layer in model.quantizer.vq.layers:
        embed = layer._codebook.embed
        pick = torch.randint(0, residual.shape[0], (embed.shape[0],), generator=gen)
        embed.copy_(residual[pick] + torch.randn(embed.shape, generator=gen) * residual.std() * 0.1)
        layer._codebook.inited.fill_(1)
        residual = residual - embed[torch.cdist(residual, embed).argmin(dim=1)]


def build_meta(which: str) -> Any:
    """Meta's model for ``which`` ("24" or "48") with seeded random weights, in eval mode."""
    encodec = import_meta_encodec()
    _, _, seed = MODELS[which]
    torch.manual_seed(seed)
    factory = (
        encodec.EncodecModel.encodec_model_24khz
        if which == "24"
        else encodec.EncodecModel.encodec_model_48khz
    )
    model = factory(pretrained=False).eval()
    _fill_codebooks(model, seed + 1)
    if which == "48":  # keep random-weight output in a [-1, 1]-like range
        with torch.no_grad():
            for p in model.decoder.model[-1].parameters():
                p.mul_(0.1)
    return model


def save_meta(model: Any, folder: Path, which: str) -> Path:
    """Save as Meta names its checkpoints (``encodec_24khz-<8 hex of sha256>.th``)."""
    tmp = folder / "tmp.th"
    torch.save(model.state_dict(), tmp)
    path = folder / f"encodec_{which}khz-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.th"
    tmp.rename(path)
    return path


_META_TO_HF = [
    (re.compile(r"^(encoder|decoder)\.model\."), r"\1.layers."),
    (re.compile(r"\.conv\.conv\."), ".conv."),
    (re.compile(r"\.convtr\.convtr\."), ".conv."),
    (re.compile(r"\.(conv|convtr)\.norm\."), ".norm."),
    (re.compile(r"\.weight_g$"), ".parametrizations.weight.original0"),
    (re.compile(r"\.weight_v$"), ".parametrizations.weight.original1"),
    (re.compile(r"^quantizer\.vq\.layers\.(\d+)\._codebook\."), r"quantizer.layers.\1.codebook."),
]


def hf_config(which: str):
    from transformers import EncodecConfig

    if which == "24":
        return EncodecConfig()  # the defaults are facebook/encodec_24khz
    return EncodecConfig(
        target_bandwidths=[3.0, 6.0, 12.0, 24.0],
        sampling_rate=48000,
        audio_channels=2,
        normalize=True,
        chunk_length_s=1.0,
        overlap=0.01,
        norm_type="time_group_norm",
        use_causal_conv=False,
    )


def build_hf_from_meta(which: str, meta_model: Any) -> Any:
    """A ``transformers.EncodecModel`` holding exactly Meta's tensors (strict load: every key matched)."""
    from transformers import EncodecModel

    model = EncodecModel(hf_config(which)).eval()
    state = {}
    for key, value in meta_model.state_dict().items():
        for pattern, repl in _META_TO_HF:
            key = pattern.sub(repl, key)
        state[key] = value
    model.load_state_dict(state, strict=True)
    return model


@dataclass
class Impl:
    """One implementation: ``encode(x [B, C, T] float32) -> codes object`` and ``decode(that) -> audio``,
    ``codes_of(that) -> int64 [B, n_q, frames]`` (segments concatenated, for the identity check)."""

    name: str
    encode: Any
    decode: Any
    codes_of: Any


def rvqkit_impl(codec: Any, sr: int, bandwidth: float) -> Impl:
    return Impl(
        "rvqkit",
        lambda x: codec.encode(x, sr, bandwidth=bandwidth),
        lambda enc: codec.decode(enc),
        lambda enc: enc.codes,
    )


def hf_impl(model: Any, bandwidth: float) -> Impl:
    def encode(x):
        with torch.inference_mode():
            return model.encode(torch.from_numpy(x).to(model.device), bandwidth=bandwidth)

    def decode(out):
        with torch.inference_mode():
            return model.decode(
                out.audio_codes, out.audio_scales, last_frame_pad_length=out.last_frame_pad_length
            )[0]

    def codes_of(out):
        codes = torch.cat(list(out.audio_codes), dim=-1)
        return codes[..., : -out.last_frame_pad_length] if out.last_frame_pad_length else codes

    return Impl("transformers", encode, decode, codes_of)


def meta_impl(model: Any, bandwidth: float) -> Impl:
    def encode(x):
        with torch.inference_mode():
            model.set_target_bandwidth(bandwidth)
            return model.encode(torch.from_numpy(x).to(next(model.parameters()).device))

    def decode(frames):
        with torch.inference_mode():
            return model.decode(frames)

    return Impl("encodec", encode, decode, lambda frames: torch.cat([c for c, _ in frames], dim=-1))


@dataclass
class ModelSet:
    """The three implementations of one model with identical weights."""

    which: str
    sr: int
    channels: int
    rvqkit: Any
    hf: Any
    meta: Any
    checkpoint: Path

    def impls(self, bandwidth: float) -> list[Impl]:
        return [
            rvqkit_impl(self.rvqkit, self.sr, bandwidth),
            hf_impl(self.hf, bandwidth),
            meta_impl(self.meta, bandwidth),
        ]


def build_set(which: str, folder: Path) -> ModelSet:
    """Build Meta's model, save it, load it into rvqkit and transformers."""
    import rvqkit

    sr, channels, _ = MODELS[which]
    meta = build_meta(which)
    path = save_meta(meta, folder, which)
    return ModelSet(
        which, sr, channels, rvqkit.Codec.from_pretrained(path), build_hf_from_meta(which, meta), meta, path
    )
