"""Load DAC weights from descript's ``.pth`` or a ``transformers`` folder, safely; save them in both formats.

- descript's ``.pth`` (``weights.pth``, ``weights_24khz.pth`` ...): a ``torch.save`` of
  ``{"state_dict": ..., "metadata": {"kwargs": DAC constructor arguments}}`` with weight-norm
  parameters ``weight_g`` / ``weight_v`` (or ``parametrizations.weight.original0/1``) under descript's
  module names (``encoder.block.1.block.0.block.1``). Read with ``torch.load(weights_only=True)``, which
  unpickles tensors and plain containers only.
- a ``transformers`` folder (``DacModel.save_pretrained``, the ``descript/dac_*`` hub repos):
  ``config.json`` (``model_type`` ``"dac"``) and ``model.safetensors`` (or ``pytorch_model.bin``)
  under ``DacModel``'s names, which are rvqkit's.

Weight norm is folded into plain weights here, as ``torch._weight_norm(v, g, 0)``: the same function
descript's forward applies every call and ``transformers``' converter applies once (norm over every
dimension but 0; for a transposed convolution, dimension 0 is its input channels). Every tensor is
accounted for: a missing, unknown or wrong-shape tensor, a file of another family, or a damaged file is
one :class:`~rvqkit.errors.WeightsError` naming it.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ..errors import WeightsError
from ..weights import check_tensors, sha256_of
from .config import DacConfig
from .model import DacModel
from .quantizer import Distance, VectorQuantize

_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_PTH_SUFFIXES = (".pth", ".pt", ".bin")
_WN = re.compile(r"^(?P<base>.+)\.(?:weight_(?P<gv>[gv])|parametrizations\.weight\.original(?P<n>[01]))$")


# -- descript's module names ---------------------------------------------------------------------------
def _res_unit_names(ours: str, theirs: str) -> dict[str, str]:
    parts = {"snake1": 0, "conv1": 1, "snake2": 2, "conv2": 3}
    return {f"{ours}.{name}": f"{theirs}.block.{i}" for name, i in parts.items()}


def descript_module_names(cfg: DacConfig) -> dict[str, str]:
    """rvqkit's (= transformers') module path → descript's, for every module holding parameters."""
    names = {"encoder.conv1": "encoder.block.0"}
    n = len(cfg.encoder_rates)
    for i in range(n):
        ours, theirs = f"encoder.block.{i}", f"encoder.block.{i + 1}.block"
        for j in range(3):
            names.update(_res_unit_names(f"{ours}.res_unit{j + 1}", f"{theirs}.{j}"))
        names[f"{ours}.snake1"] = f"{theirs}.3"
        names[f"{ours}.conv1"] = f"{theirs}.4"
    names["encoder.snake1"] = f"encoder.block.{n + 1}"
    names["encoder.conv2"] = f"encoder.block.{n + 2}"
    names["decoder.conv1"] = "decoder.model.0"
    n = len(cfg.decoder_rates)
    for i in range(n):
        ours, theirs = f"decoder.block.{i}", f"decoder.model.{i + 1}.block"
        names[f"{ours}.snake1"] = f"{theirs}.0"
        names[f"{ours}.conv_t1"] = f"{theirs}.1"
        for j in range(3):
            names.update(_res_unit_names(f"{ours}.res_unit{j + 1}", f"{theirs}.{j + 2}"))
    names["decoder.snake1"] = f"decoder.model.{n + 1}"
    names["decoder.conv2"] = f"decoder.model.{n + 2}"
    for k in range(cfg.num_codebooks):
        for part in ("in_proj", "out_proj", "codebook"):
            names[f"quantizer.quantizers.{k}.{part}"] = f"quantizer.quantizers.{k}.{part}"
    return names


def fold_weight_norm(raw: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """``raw`` with every ``weight_g`` / ``weight_v`` pair (or ``parametrizations.weight.original0/1``)
    replaced by the plain ``weight`` ``g * v / ||v||``, computed as descript's forward computes it."""
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in raw.items():
        m = _WN.match(key)
        if m is None:
            out[key] = value
            continue
        which = m.group("gv") or ("g" if m.group("n") == "0" else "v")
        pairs.setdefault(m.group("base"), {})[which] = value
    for base, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            missing = "g" if "g" not in gv else "v"
            raise WeightsError(f"{where}: weight-norm tensor {base}.weight_{missing} is missing")
        g, v = gv["g"].float(), gv["v"].float()
        if g.ndim != v.ndim or g.shape[0] != v.shape[0] or g.numel() != v.shape[0]:
            raise WeightsError(
                f"{where}: {base}.weight_g has shape {tuple(g.shape)}, which does not fit "
                f"weight_v {tuple(v.shape)}"
            )
        if base + ".weight" in out:
            raise WeightsError(f"{where}: {base} has both a plain weight and weight-norm tensors")
        out[base + ".weight"] = torch._weight_norm(v, g, 0)
    return out


def from_descript_state_dict(
    raw: dict[str, torch.Tensor], cfg: DacConfig, where: str = "weights"
) -> dict[str, torch.Tensor]:
    """descript's state dict (weight norm folded) in rvqkit's names; an unknown key is a WeightsError."""
    theirs_to_ours = {v: k for k, v in descript_module_names(cfg).items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in fold_weight_norm(raw, where).items():
        module, _, param = key.rpartition(".")
        ours = theirs_to_ours.get(module)
        if ours is None:
            raise WeightsError(f"unknown tensor in {where}: {key} (not a DAC {cfg.name} tensor)")
        out[f"{ours}.{param}"] = value
    return out


def build_model(
    cfg: DacConfig, state: dict[str, torch.Tensor], where: str, distance: Distance = "descript"
) -> DacModel:
    """A :class:`DacModel` holding ``state`` (rvqkit names), checked tensor by tensor, in eval mode."""
    with torch.device("meta"):  # no initialisation: every tensor is assigned from ``state`` below
        model = DacModel(cfg, distance)
    check_tensors(model.state_dict(), state, where=where, owner=f"DAC {cfg.name}")
    for key, value in state.items():
        if not value.is_floating_point():
            raise WeightsError(f"{where}: tensor {key} has dtype {value.dtype}, expected floating point")
    model.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, assign=True)
    return model.eval().requires_grad_(False)


# -- reading ---------------------------------------------------------------------------------------------
def _read_pth(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncation, not a torch file, objects weights_only refuses to unpickle
        raise WeightsError(f"cannot read DAC weights from {path}: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise WeightsError(
            f"{path} is not a DAC .pth: expected a dict with 'state_dict' and 'metadata' (descript's format)"
        )
    state = obj["state_dict"]
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise WeightsError(f"{path}: state_dict entry {bad!r} is not a tensor")
    meta = obj.get("metadata")
    kwargs = meta.get("kwargs") if isinstance(meta, dict) else None
    if not isinstance(kwargs, dict):
        raise WeightsError(f"{path} has no metadata['kwargs'] (the DAC constructor arguments)")
    return state, kwargs


def load_dac_pth(path: str | os.PathLike[str], distance: Distance = "descript") -> tuple[DacModel, DacConfig]:
    """A model from descript's ``.pth`` (its ``metadata["kwargs"]`` give the architecture)."""
    path = Path(path)
    state, kwargs = _read_pth(path)
    if not any(k.startswith("quantizer.quantizers.") for k in state):
        raise WeightsError(f"{path} is not a DAC checkpoint (no quantizer.quantizers.* tensors)")
    cfg = DacConfig.from_dac_kwargs(kwargs, name=path.stem)
    model = build_model(cfg, from_descript_state_dict(state, cfg, str(path)), str(path), distance)
    return model, cfg


def _read_hf_config(folder: Path) -> dict[str, Any]:
    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError as e:
        raise WeightsError(f"{folder} has no config.json (expected a transformers DAC folder)") from e
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot parse {cfg_path}: {e}") from e
    if not isinstance(cfg, dict):
        raise WeightsError(f"{cfg_path} does not hold a JSON object")
    return cfg


def load_dac_hf(
    folder: str | os.PathLike[str], distance: Distance = "descript"
) -> tuple[DacModel, DacConfig]:
    """A model from a ``transformers`` folder: ``config.json`` + ``model.safetensors`` (or ``.bin``)."""
    folder = Path(folder)
    raw_cfg = _read_hf_config(folder)
    if raw_cfg.get("model_type") != "dac":
        raise WeightsError(
            f"{folder}/config.json is for model_type {raw_cfg.get('model_type')!r}, not a DAC model ('dac')"
        )
    cfg = DacConfig.from_hf_config(raw_cfg, name=folder.name)
    for name in _HF_WEIGHT_FILES:
        wpath = folder / name
        if wpath.is_file():
            raw = _safetensors(wpath) if name.endswith(".safetensors") else _torch_state(wpath)
            return build_model(cfg, fold_weight_norm(raw, str(wpath)), str(wpath), distance), cfg
    raise WeightsError(f"{folder} has config.json but no {' or '.join(_HF_WEIGHT_FILES)}")


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"cannot read DAC weights from {path}: {e}") from e


def _torch_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read DAC weights from {path}: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return obj


def load_dac(path: str | os.PathLike[str], distance: Distance = "descript") -> tuple[DacModel, DacConfig]:
    """A DAC model and its config from a local descript ``.pth``, a ``transformers`` folder, or a file in
    such a folder (``config.json``, ``model.safetensors``). Hub ids are resolved by the caller.

    ``distance``: the quantizer's formula, ``"descript"`` (default) or ``"transformers"``.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "config.json").is_file():
            return load_dac_hf(p, distance)
        raise WeightsError(f"{p} has no config.json: not a transformers DAC folder (give a .pth file itself)")
    if p.is_file():
        if p.name == "config.json" or (p.name in _HF_WEIGHT_FILES and (p.parent / "config.json").is_file()):
            return load_dac_hf(p.parent, distance)
        return load_dac_pth(p, distance)
    raise WeightsError(f"no such DAC weights file or folder: {p}")


def looks_like_dac(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like DAC weights, from cheap reads only (no tensor is loaded):

    - a folder (or a file in it) whose ``config.json`` says ``"model_type": "dac"``;
    - a ``.pth`` whose pickle (``data.pkl`` of torch's zip format) names descript's ``metadata`` /
      ``kwargs`` and a ``quantizer.quantizers.0.codebook.weight`` tensor.
    """
    p = Path(path).expanduser()
    try:
        folder = p if p.is_dir() else p.parent
        if p.is_dir() or p.name == "config.json" or p.name in _HF_WEIGHT_FILES:
            cfg_path = folder / "config.json"
            if cfg_path.is_file() and cfg_path.stat().st_size < 1 << 20:
                cfg = json.loads(cfg_path.read_text())
                return isinstance(cfg, dict) and cfg.get("model_type") == "dac"
            return False
        if p.is_file() and p.suffix in _PTH_SUFFIXES and zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as z:
                pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                if pkl is None or z.getinfo(pkl).file_size > 64 << 20:
                    return False
                data = z.read(pkl)
            return b"quantizer.quantizers.0.codebook.weight" in data and b"encoder_rates" in data
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
    return False


# -- writing (the published formats, for tests and conversions) --------------------------------------------
def _weight_normed(model: DacModel) -> set[str]:
    """Module paths whose weight descript stores as weight norm: every convolution."""
    return {n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))}


def to_descript_state_dict(model: DacModel) -> dict[str, torch.Tensor]:
    """The model's weights under descript's names, each convolution's weight un-folded into
    ``weight_g = ||w||`` (per output of dimension 0) and ``weight_v = w``, as descript stores them."""
    names = descript_module_names(model.config)
    normed = _weight_normed(model)
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        module, _, param = key.rpartition(".")
        theirs = names[module]
        value = value.detach().clone()
        if module in normed and param == "weight":
            out[f"{theirs}.weight_g"] = torch.norm_except_dim(value, 2, 0)
            out[f"{theirs}.weight_v"] = value
        else:
            out[f"{theirs}.{param}"] = value
    return out


def save_dac_pth(model: DacModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as descript's ``.pth``: ``{"state_dict": ..., "metadata": {"kwargs": ...}}``."""
    path = Path(path)
    torch.save(
        {"state_dict": to_descript_state_dict(model), "metadata": {"kwargs": model.config.to_dac_kwargs()}},
        path,
    )
    return path


def save_dac_hf(model: DacModel, folder: str | os.PathLike[str]) -> Path:
    """Write ``model`` as ``transformers.DacModel.save_pretrained`` does: ``config.json`` and
    ``model.safetensors`` with plain (folded) weights."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config.to_hf_config()
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


# -- seeded random weights -----------------------------------------------------------------------------------
@torch.no_grad()
def random_dac(cfg: DacConfig, seed: int = 0, distance: Distance = "descript") -> DacModel:
    """A :class:`DacModel` with seeded random weights whose codes are varied (for tests; the audio is
    noise). The caller's random state is left as it was.

    Convolutions keep torch's default initialisation, Snake's ``alpha`` is drawn in [0.5, 1.5], and the
    codebooks hold normalized projections of the encoder's latents for a seeded test signal (so that
    many entries are used, as k-means would start); the decoder's last convolution is scaled so that its
    output stays clear of tanh's saturation.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DacModel(cfg, distance).eval()
        for m in model.modules():
            if hasattr(m, "alpha"):
                m.alpha.uniform_(0.5, 1.5)  # type: ignore[operator]  # Snake1d.alpha, a Parameter
        sr = cfg.sampling_rate
        t = torch.arange(sr, dtype=torch.float64) / sr
        x = 0.3 * torch.sin(2 * torch.pi * (110.0 + 700.0 * t) * t) + 0.05 * torch.randn(
            sr, dtype=torch.float64
        )
        latents = model.encoder(model.pad_to_frames(x.float()[None, None]))
        residual = latents
        for q in cast(Iterable[VectorQuantize], model.quantizer.quantizers):  # a ModuleList of these
            z_e = q.in_proj(residual)[0].t()  # [frames, codebook_dim]
            pick = torch.randint(0, z_e.shape[0], (q.codebook.weight.shape[0],))
            q.codebook.weight.copy_(z_e[pick] + 0.3 * z_e.std() * torch.randn_like(q.codebook.weight))
            idx = q.nearest(q.in_proj(residual))
            residual = residual - q.out_proj(q.lookup(idx))
        model.decoder.conv2.weight.mul_(0.1)
        assert model.decoder.conv2.bias is not None  # nn.Conv1d with the default bias=True
        model.decoder.conv2.bias.mul_(0.1)
    return model.requires_grad_(False)


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a weights file (of ``model.safetensors`` or ``pytorch_model.bin`` for a folder)."""
    p = Path(path)
    if p.is_dir():
        for name in _HF_WEIGHT_FILES:
            if (p / name).is_file():
                return sha256_of(p / name)
        raise WeightsError(f"{p} has no {' or '.join(_HF_WEIGHT_FILES)}")
    return sha256_of(p)
