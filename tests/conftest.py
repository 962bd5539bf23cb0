"""Shared fixtures: random-weight reference models (Hugging Face transformers and Meta's encodec),
saved in their real on-disk formats, and loaded back through rvqkit's real loading code."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

# As `import rvqkit` does, but before torch loads OpenMP: idle OpenMP threads sleep instead of spinning
# (spinning threads cost several times the CPU on a loaded machine; see rvqkit/runtime.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

STUBS = Path(__file__).parent / "stubs"

# Test modules whose assertions compare floats or codes against a reference computed in the same run.
# Their outcome can depend on the thread count (oneDNN splits reductions by thread), so .ci/run runs
# them again with RVQKIT_TEST_THREADS=1 after the full suite (with torch's default threads).
ARITH_MODULES = {
    "test_parity.py",
    "test_stream.py",
    "test_chunked.py",
    "test_blocked.py",
    "test_lstm_batch.py",
    "test_inspector.py",
    "test_engine.py",
    "test_snac_parity.py",
    "test_snac_chunked.py",
    "test_conv.py",
    "test_lstm.py",
    "test_seanet.py",
    "test_streaming.py",
}


def pytest_configure(config: pytest.Config) -> None:
    threads = os.environ.get("RVQKIT_TEST_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in ARITH_MODULES:
            item.add_marker(pytest.mark.arith)


def _import_meta_encodec():
    """Meta's encodec imports torchaudio at import time; give it the stand-in in tests/stubs."""
    try:
        import torchaudio  # noqa: F401
    except Exception:
        sys.modules.pop("torchaudio", None)
        sys.path.insert(0, str(STUBS))
    import encodec

    return encodec


@torch.no_grad()
def fit_codebooks(
    encoder: torch.nn.Module, codebooks: list[torch.Tensor], channels: int, sr: int, seed: int
) -> None:
    """Fill codebooks as k-means initialisation would: codebook k holds randomly chosen residual frames
    (plus a little noise) of the embeddings of a test signal after codebooks 0..k-1. Random-weight models
    then use many distinct codes, so code equality is a meaningful check."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(make_signal(sr * 4, channels, sr, seed=seed))[None]
    x = x / x.pow(2).mean().sqrt()
    residual = encoder(x)[0].t()  # [frames, D]
    for embed in codebooks:
        pick = torch.randint(0, residual.shape[0], (embed.shape[0],), generator=gen)
        noise = torch.randn(embed.shape, generator=gen) * residual.std() * 0.1
        embed.copy_(residual[pick] + noise)
        dist = torch.cdist(residual, embed)
        residual = residual - embed[dist.argmin(dim=1)]


def shrink_output(conv: torch.nn.Module, factor: float = 0.1) -> None:
    """Scale down the decoder's last conv so random-weight outputs stay in a [-1, 1]-like range."""
    with torch.no_grad():
        for name, p in conv.named_parameters():
            if name.endswith(("weight_g", "original0", "weight", "bias")):
                p.mul_(factor)


def save_meta_checkpoint(model: torch.nn.Module, folder: Path, name: str) -> Path:
    """Save a state dict as Meta does, named ``<name>-<first 8 hex of sha256>.th``."""
    tmp = folder / f"{name}.tmp"
    torch.save(model.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    path = folder / f"{name}-{digest}.th"
    tmp.rename(path)
    return path


@pytest.fixture(scope="session")
def meta_encodec():
    return _import_meta_encodec()


def _build_meta(meta_encodec, which: str, seed: int):
    torch.manual_seed(seed)
    factory = {
        "24": meta_encodec.EncodecModel.encodec_model_24khz,
        "48": meta_encodec.EncodecModel.encodec_model_48khz,
    }
    model = factory[which](pretrained=False).eval()
    with torch.no_grad():
        books = [layer._codebook.embed for layer in model.quantizer.vq.layers]
        fit_codebooks(model.encoder, books, model.channels, model.sample_rate, seed + 1)
        for layer in model.quantizer.vq.layers:
            layer._codebook.inited.fill_(1)
        if which == "48":
            shrink_output(model.decoder.model[-1])
    return model


@pytest.fixture(scope="session")
def meta_24k(meta_encodec, tmp_path_factory):
    """(Meta model, path of its .th checkpoint) for the 24 kHz architecture with random weights."""
    model = _build_meta(meta_encodec, "24", 1234)
    path = save_meta_checkpoint(model, tmp_path_factory.mktemp("meta24"), "encodec_24khz")
    return model, path


@pytest.fixture(scope="session")
def meta_48k(meta_encodec, tmp_path_factory):
    model = _build_meta(meta_encodec, "48", 4321)
    path = save_meta_checkpoint(model, tmp_path_factory.mktemp("meta48"), "encodec_48khz")
    return model, path


@pytest.fixture(scope="module")
def codec24(meta_24k):
    """rvqkit's Codec loaded from the 24 kHz Meta checkpoint (one per test module)."""
    from rvqkit import Codec

    return Codec.from_pretrained(meta_24k[1])


@pytest.fixture(scope="module")
def codec48(meta_48k):
    """rvqkit's Codec loaded from the 48 kHz Meta checkpoint (one per test module)."""
    from rvqkit import Codec

    return Codec.from_pretrained(meta_48k[1])


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


def _build_hf(which: str, seed: int, folder: Path):
    from transformers import EncodecModel

    torch.manual_seed(seed)
    model = EncodecModel(hf_config(which)).eval()
    cfg = model.config
    with torch.no_grad():
        books = [layer.codebook.embed for layer in model.quantizer.layers]
        fit_codebooks(model.encoder, books, cfg.audio_channels, cfg.sampling_rate, seed + 1)
        if which == "48":
            shrink_output(model.decoder.layers[-1])
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="session")
def hf_24k(tmp_path_factory):
    """(transformers model, folder with config.json + model.safetensors), 24 kHz, random weights."""
    folder = tmp_path_factory.mktemp("hf24")
    return _build_hf("24", 99, folder), folder


@pytest.fixture(scope="session")
def hf_48k(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf48")
    return _build_hf("48", 77, folder), folder


def make_signal(n: int, channels: int, sr: int, seed: int = 0) -> np.ndarray:
    """A mix of tones, a chirp and noise, ``[channels, n]`` float32, peak about 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    out = []
    for c in range(channels):
        f0 = 110 * (c + 1) * (1 + rng.random())
        x = 0.25 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(
            2 * np.pi * (200 + 2000 * t / max(t[-1], 1e-3)) * t
        )
        x += 0.05 * rng.standard_normal(n)
        out.append(x)
    return np.asarray(out, dtype=np.float32)


@torch.no_grad()
def meta_reference(model, x: np.ndarray, bandwidth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's codes ``[1, n_q, frames]`` (segments concatenated) and audio ``[1, C, T]`` for one item."""
    model.set_target_bandwidth(bandwidth)
    frames = model.encode(torch.from_numpy(x)[None])
    audio = model.decode(frames)[..., : x.shape[-1]]
    return torch.cat([codes for codes, _ in frames], dim=-1), audio


@torch.no_grad()
def hf_reference(model, x: np.ndarray, bandwidth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' codes ``[1, n_q, frames]`` and audio ``[1, C, T]`` for one item."""
    out = model.encode(torch.from_numpy(x)[None], bandwidth=bandwidth)
    audio = model.decode(out.audio_codes, out.audio_scales, last_frame_pad_length=out.last_frame_pad_length)[
        0
    ]
    codes = torch.cat(list(out.audio_codes), dim=-1)
    if out.last_frame_pad_length:
        codes = codes[..., : -out.last_frame_pad_length]
    return codes, audio[..., : x.shape[-1]]
