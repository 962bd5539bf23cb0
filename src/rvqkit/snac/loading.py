"""Load SNAC weights from the format the snac package publishes, safely, and save random models in it.

A SNAC checkpoint is a folder (a hub snapshot) with ``config.json`` (``SNAC.__init__``'s keyword
arguments) and ``pytorch_model.bin`` (a plain state dict). It is read with
``torch.load(weights_only=True)`` (no code runs from the file); ``model.safetensors`` is accepted too.
Weight norm comes in either key style, ``*.parametrizations.weight.original0/1`` (torch's
parametrizations, what snac 1.2.1 writes) or ``*.weight_g/_v`` (the older ``nn.utils.weight_norm``);
both are folded here into plain weights with the reference's own operation, ``torch._weight_norm(v, g, 0)``.
Every tensor is accounted for: a missing, unknown or wrong-shape one is a :class:`WeightsError` naming it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from ..atomic import write_atomic
from ..errors import WeightsError
from ..weights import _safetensors_load, _torch_load, check_tensors, download_from_hub
from .attention import RotaryEmbedding
from .config import HUB_IDS, SnacConfig
from .model import SnacModel
from .quantizer import VectorQuantize

WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")
_G = re.compile(r"\.(?:parametrizations\.weight\.original0|weight_g)$")
_V = re.compile(r"\.(?:parametrizations\.weight\.original1|weight_v)$")
_HINT = " (is this a SNAC checkpoint, and its config.json the one it was trained with?)"


def read_config(path: Path) -> SnacConfig:
    """The :class:`SnacConfig` of a snac ``config.json``; :class:`WeightsError` if unreadable or not SNAC's."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot read {path}: {e}") from e
    return SnacConfig.from_snac_config(data, str(path))


def fold_weight_norm(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A snac state dict with its weight-norm pairs ``(g, v)`` folded into ``weight`` (float32), in
    either key style; other tensors are kept (as float32)."""
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(f"the weights hold a non-tensor entry {key!r}")
        for which, pattern in (("g", _G), ("v", _V)):
            if pattern.search(key):
                pairs.setdefault(pattern.sub(".weight", key), {})[which] = value
                break
        else:
            out[key] = value.float()
    for key, pair in pairs.items():
        if len(pair) != 2:
            missing = (
                "direction (original1 / weight_v)" if "v" not in pair else "magnitude (original0 / weight_g)"
            )
            raise WeightsError(f"weight-norm tensor {key} has no {missing} in the weights")
        g, v = pair["g"].float(), pair["v"].float()
        if g.dim() != v.dim() or g.shape[0] != v.shape[0] or g[0].numel() != 1:
            raise WeightsError(
                f"weight-norm tensors of {key} do not fit: g {tuple(g.shape)}, v {tuple(v.shape)}"
            )
        if key in out:
            raise WeightsError(f"tensor {key} is given both plain and with weight norm")
        out[key] = torch._weight_norm(v, g, 0)
    return out


def build_snac(config: SnacConfig, state_dict: dict[str, torch.Tensor]) -> SnacModel:
    """A :class:`SnacModel` holding ``state_dict`` (weight norm folded), checked tensor by tensor."""
    model = SnacModel(config)
    expected = model.state_dict()
    state = dict(state_dict)
    for name, module in model.named_modules():  # a deterministic constant; filled in if a file left it out
        if isinstance(module, RotaryEmbedding) and f"{name}.inv_freq" not in state:
            state[f"{name}.inv_freq"] = module.inv_freq.clone()
    check_tensors(expected, state, owner=f"the config's model ({config.name or 'config.json'})", hint=_HINT)
    if not all(torch.isfinite(v).all() for v in state.values()):
        bad = next(k for k, v in state.items() if not torch.isfinite(v).all())
        raise WeightsError(f"tensor {bad} holds NaN or infinite values")
    model.load_state_dict(state)
    return model.eval()


def _weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"{folder} has no {' or '.join(WEIGHT_FILES)} (expected a SNAC checkpoint folder)")


def _resolve(path: str | os.PathLike[str], revision: str | None) -> tuple[Path, Path]:
    """(config.json, weights file) of a folder, a weights file (config.json beside it) or a hub id."""
    text = str(path)
    p = Path(path).expanduser()
    if p.is_dir():
        folder = p
        weights = _weights_file(folder)
    elif p.is_file():
        if p.name == "config.json":
            folder, weights = p.parent, _weights_file(p.parent)
        else:
            folder, weights = p.parent, p
    else:
        repo_id = HUB_IDS.get(text, text)
        if repo_id not in HUB_IDS.values():
            raise WeightsError(
                f"no such file or folder, and not a SNAC hub id ({', '.join(HUB_IDS.values())}): {text}"
            )
        folder = download_from_hub(repo_id, revision)
        weights = _weights_file(folder)
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise WeightsError(
            f"{folder} has no config.json (a SNAC checkpoint is config.json + pytorch_model.bin)"
        )
    return cfg, weights


def load_snac(path: str | os.PathLike[str], revision: str | None = None) -> tuple[SnacModel, SnacConfig]:
    """A SNAC model (eval mode, float32, CPU) and its config from a checkpoint folder (``config.json`` +
    ``pytorch_model.bin`` or ``model.safetensors``), a weights file with its ``config.json`` beside it, or
    a hub id (``hubertsiuzdak/snac_24khz``, ``snac_32khz``, ``snac_44khz``, or the short names; through
    the Hugging Face cache). Raises :class:`WeightsError` for a missing, corrupt or foreign file."""
    cfg_path, weights = _resolve(path, revision)
    config = read_config(cfg_path)
    raw = _safetensors_load(weights) if weights.suffix == ".safetensors" else _torch_load(weights)
    return build_snac(config, fold_weight_norm(raw)), config


def looks_like_snac(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a SNAC checkpoint, from its ``config.json`` alone (no weights read): a
    folder or a weights file whose ``config.json`` has SNAC's fields and no ``model_type``, or a SNAC hub
    id. Never raises."""
    text = str(path)
    if text in HUB_IDS or text in HUB_IDS.values():
        return True
    try:
        p = Path(path).expanduser()
        folder = p if p.is_dir() else p.parent if p.is_file() else None
        if folder is None or not any((folder / n).is_file() for n in WEIGHT_FILES):
            return False
        data = json.loads((folder / "config.json").read_text())
        if not isinstance(data, dict) or not {"vq_strides", "encoder_rates"} & set(data):
            return False
        SnacConfig.from_snac_config(data)
        return True
    except (OSError, ValueError, WeightsError):
        return False


# -- saving, random models ------------------------------------------------------------------------------
def snac_state_dict(model: SnacModel, key_style: str = "parametrizations") -> dict[str, torch.Tensor]:
    """``model``'s weights in snac's layout: every convolution's weight split into weight norm's magnitude
    ``g`` (the norm over all but dim 0) and direction ``v`` (the weight), named
    ``parametrizations.weight.original0/1`` (snac 1.2.1) or ``weight_g/_v`` (``key_style="weight_g"``)."""
    if key_style not in ("parametrizations", "weight_g"):
        raise ValueError(f'key_style must be "parametrizations" or "weight_g", got {key_style!r}')
    names = ("parametrizations.weight.original0", "parametrizations.weight.original1")
    if key_style == "weight_g":
        names = ("weight_g", "weight_v")
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv1d | nn.ConvTranspose1d)}
    out = {}
    for key, value in model.state_dict().items():
        base, _, leaf = key.rpartition(".")
        if base in convs and leaf == "weight":
            w = value.detach().clone()
            out[f"{base}.{names[0]}"] = torch.norm_except_dim(w, 2, 0)
            out[f"{base}.{names[1]}"] = w
        else:
            out[key] = value.detach().clone()
    return out


def save_snac(
    folder: str | os.PathLike[str],
    state_dict: dict[str, torch.Tensor],
    config: SnacConfig,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint folder as snac publishes it: ``config.json`` and ``pytorch_model.bin``
    (``torch.save`` of ``state_dict``, in snac's key layout, e.g. from :func:`snac_state_dict` or a snac
    model's ``state_dict()``). Existing files are kept unless ``overwrite``. Returns the folder."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    targets = (out / "config.json", out / "pytorch_model.bin")
    if not overwrite:
        for t in targets:
            if t.exists():
                raise WeightsError(f"{t} exists; pass overwrite=True to replace it")
    write_atomic(targets[0], lambda p: p.write_text(json.dumps(config.to_snac_config(), indent=2) + "\n"))
    write_atomic(targets[1], lambda p: torch.save(state_dict, p))
    return out


def chirp_signal(sampling_rate: int, seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """A seeded speech-like test signal ``[1, 1, samples]``: a chirp with vibrato and a little noise."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sampling_rate)
    t = torch.arange(n, dtype=torch.float64) / sampling_rate
    phase = 2 * torch.pi * (150.0 * t + 400.0 * t**2 + 3.0 * torch.sin(2 * torch.pi * 5.0 * t))
    x = 0.4 * torch.sin(phase) * (0.6 + 0.4 * torch.sin(2 * torch.pi * 3.0 * t))
    return (x + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)).float().view(1, 1, n)


@torch.no_grad()
def seed_codebooks(model: SnacModel, x: torch.Tensor, seed: int = 0) -> None:
    """Fill each level's codebook with projected residuals of ``x`` ``[1, 1, samples]`` plus noise, level by
    level (as k-means would start), so that a random-weight model uses many distinct codes. Random
    codebooks leave nearly every frame on the same few entries: the projected latents of a random encoder
    share one dominant direction (cosine >= 0.75 to their mean, measured on the 24 kHz preset)."""
    g = torch.Generator().manual_seed(seed)
    residual = model.encoder(model.preprocess(x))
    for q in cast(Iterable[VectorQuantize], model.quantizer.quantizers):  # a ModuleList of these
        pooled = F.avg_pool1d(residual, q.stride, q.stride) if q.stride > 1 else residual
        frames = q.in_proj(pooled)[0].t()  # [T_i, codebook_dim]
        n = q.codebook.weight.shape[0]
        pick = torch.randint(0, frames.shape[0], (n,), generator=g)
        noise = torch.randn(q.codebook.weight.shape, generator=g) * frames.std(0) * 0.5
        q.codebook.weight.copy_(frames[pick] + noise)
        residual = residual - q(residual)[0]


@torch.no_grad()
def random_snac(config: SnacConfig, seed: int = 0) -> SnacModel:
    """A SNAC model with seeded random weights (for tests and trying the code without a download; the
    audio is noise). Torch's default initialisation from ``seed``; Snake's ``alpha`` and the norms' scales
    drawn around 1 so that no parameter keeps a constant value that would hide a layout mistake; the
    codebooks seeded from a test signal (:func:`seed_codebooks`). The caller's random state is left as
    it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SnacModel(config)
        for name, p in model.named_parameters():
            if name.endswith(".alpha") or name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("norm.bias"):
                p.uniform_(-0.1, 0.1)
        seed_codebooks(model, chirp_signal(config.sampling_rate, 2.0, seed), seed)
    return model.eval()
