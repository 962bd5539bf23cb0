"""Find EnCodec weights (hub id, Hugging Face folder, Meta ``.th`` file), load them safely, and map them
onto :class:`rvqkit.model.EncodecModel` with weight norm folded into plain weights.

Two key schemes exist: Hugging Face's (``encoder.layers.0.conv.weight_g`` or, from newer transformers,
``...conv.parametrizations.weight.original0``) and Meta's (``encoder.model.0.conv.conv.weight_g``).
Both are translated to rvqkit's own names, and every tensor is accounted for: a missing, unknown or
wrong-shape tensor is a :class:`~rvqkit.errors.WeightsError` naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import PRESETS, CodecConfig
from .errors import WeightsError
from .model import EncodecModel

HUB_IDS = {"encodec_24khz": "facebook/encodec_24khz", "encodec_48khz": "facebook/encodec_48khz"}
META_CHECKPOINTS = {
    "encodec_24khz": "encodec_24khz-d7cc33bc.th",
    "encodec_48khz": "encodec_48khz-7e698e3e.th",
}
_META_NAME = re.compile(r"^(?P<name>encodec_(?:24|48)khz)-(?P<sha>[0-9a-f]{8})\.th$")
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class LoadedWeights:
    """A state dict in rvqkit's names, the config it fits, and where it came from."""

    config: CodecConfig
    state_dict: dict[str, torch.Tensor]
    source: str
    sha256: str


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncation, non-tensor content refused by weights_only
        raise WeightsError(f"cannot read weights from {path}: {e}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return obj


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:
        raise WeightsError(f"cannot read weights from {path}: {e}") from None


# -- key translation ---------------------------------------------------------------------------------
_META_RULES = [
    (re.compile(r"^(encoder|decoder)\.model\."), r"\1.layers."),
    (re.compile(r"\.conv\.conv\."), ".conv."),
    (re.compile(r"\.convtr\.convtr\."), ".conv."),
    (re.compile(r"\.(conv|convtr)\.norm\."), ".norm."),
]
_HF_RULES = [
    (re.compile(r"\.parametrizations\.weight\.original0$"), ".weight_g"),
    (re.compile(r"\.parametrizations\.weight\.original1$"), ".weight_v"),
]
_CODEBOOK = re.compile(r"^quantizer\.(?:vq\.)?layers\.(\d+)\.(?:_codebook|codebook)\.(\w+)$")
_IGNORED_CODEBOOK_BUFFERS = {"inited", "cluster_size", "embed_avg"}


def to_rvqkit_state_dict(raw: dict[str, torch.Tensor], num_quantizers: int) -> dict[str, torch.Tensor]:
    """Translate a Meta or Hugging Face state dict to rvqkit names, folding weight norm."""
    renamed: dict[str, torch.Tensor] = {}
    codebooks: dict[int, torch.Tensor] = {}
    for key, value in raw.items():
        m = _CODEBOOK.match(key)
        if m:
            idx, what = int(m.group(1)), m.group(2)
            if what == "embed":
                codebooks[idx] = value
            elif what not in _IGNORED_CODEBOOK_BUFFERS:
                raise WeightsError(f"unknown tensor in weights: {key}")
            continue
        for pattern, repl in _META_RULES + _HF_RULES:
            key = pattern.sub(repl, key)
        renamed[key] = value
    out: dict[str, torch.Tensor] = {}
    for key, value in renamed.items():
        if key.endswith(".weight_g"):
            base = key[: -len("_g")]
            v = renamed.get(base + "_v")
            if v is None:
                raise WeightsError(f"weight-norm tensor {key} has no matching {base}_v")
            out[base] = torch._weight_norm(v.float(), value.float(), 0)
        elif key.endswith(".weight_v"):
            if key[: -len("_v")] + "_g" not in renamed:
                raise WeightsError(f"weight-norm tensor {key} has no matching {key[:-2]}_g")
        else:
            out[key] = value
    if codebooks:
        missing = [i for i in range(num_quantizers) if i not in codebooks]
        extra = [i for i in codebooks if i >= num_quantizers]
        if missing:
            raise WeightsError(f"missing tensor in weights: quantizer layer {missing[0]} codebook embed")
        if extra:
            raise WeightsError(
                f"unknown tensor in weights: quantizer layer {extra[0]} (model has {num_quantizers})"
            )
        out["quantizer.codebooks"] = torch.stack([codebooks[i] for i in range(num_quantizers)])
    return out


def check_tensors(
    expected: dict[str, torch.Tensor],
    given: dict[str, torch.Tensor],
    where: str = "weights",
    owner: str = "the model",
    hint: str = "",
) -> None:
    """Raise :class:`WeightsError` naming the first unknown, wrong-shape or missing tensor of ``given``."""
    for key, value in given.items():
        if key not in expected:
            raise WeightsError(f"unknown tensor in {where}: {key}{hint}")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise WeightsError(
                f"tensor {key} has shape {tuple(value.shape)}, {owner} expects {tuple(expected[key].shape)}"
            )
    missing = [k for k in expected if k not in given]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"missing tensor in {where}: {missing[0]}{more}{hint}")


def build_model(config: CodecConfig, state_dict: dict[str, torch.Tensor]) -> EncodecModel:
    """An :class:`EncodecModel` for ``config`` holding ``state_dict`` (rvqkit names), checked tensor by tensor."""
    model = EncodecModel(config)
    check_tensors(model.state_dict(), state_dict)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()})
    return model.eval()


# -- sources --------------------------------------------------------------------------------------------
def _meta_config(path: Path, raw: dict[str, torch.Tensor]) -> CodecConfig:
    m = _META_NAME.match(path.name)
    if m:
        return PRESETS[m.group("name")]
    first = raw.get("encoder.model.0.conv.conv.weight_v", raw.get("encoder.model.0.conv.conv.weight"))
    if first is None:
        raise WeightsError(f"{path} is not an EnCodec checkpoint (no encoder.model.0 convolution)")
    return PRESETS["encodec_48khz" if first.shape[1] == 2 else "encodec_24khz"]


def load_meta_checkpoint(path: Path) -> LoadedWeights:
    """Meta's ``encodec_24khz-d7cc33bc.th`` / ``encodec_48khz-7e698e3e.th``; the sha256 prefix in the name is checked."""
    digest = sha256_of(path)
    m = _META_NAME.match(path.name)
    if m and not digest.startswith(m.group("sha")):
        raise WeightsError(
            f"checksum mismatch for {path}: the name says sha256 starts with {m.group('sha')}, "
            f"the file's starts with {digest[:8]} (corrupt or wrong file)"
        )
    raw = _torch_load(path)
    config = _meta_config(path, raw)
    return LoadedWeights(config, to_rvqkit_state_dict(raw, config.num_quantizers), str(path), digest)


def load_hf_folder(folder: Path) -> LoadedWeights:
    """A Hugging Face model folder: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``)."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise WeightsError(f"{folder} has no config.json (expected a Hugging Face EnCodec model folder)")
    try:
        cfg_dict = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot parse {cfg_path}: {e}") from None
    config = CodecConfig.from_hf_dict(cfg_dict)
    for name in _HF_WEIGHT_FILES:
        wpath = folder / name
        if wpath.is_file():
            raw = _safetensors_load(wpath) if name.endswith(".safetensors") else _torch_load(wpath)
            return LoadedWeights(
                config, to_rvqkit_state_dict(raw, config.num_quantizers), str(folder), sha256_of(wpath)
            )
    raise WeightsError(f"{folder} has config.json but no {' or '.join(_HF_WEIGHT_FILES)}")


def download_from_hub(repo_id: str, revision: str | None = None) -> Path:
    """Fetch a hub model's config and weights through ``huggingface_hub`` (its cache, its offline mode)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        cfg = hf_hub_download(repo_id, "config.json", revision=revision)
    except LocalEntryNotFoundError:
        raise WeightsError(
            f"{repo_id} is not in the Hugging Face cache and cannot be downloaded (offline or no network); "
            "give a local model folder or Meta .th file instead"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise WeightsError(f"cannot fetch {repo_id} from the Hugging Face hub: {e}") from None
    for name in _HF_WEIGHT_FILES:
        try:
            hf_hub_download(repo_id, name, revision=revision)
            return Path(cfg).parent
        except EntryNotFoundError:
            continue
        except LocalEntryNotFoundError:
            continue
        except (HfHubHTTPError, OSError, ValueError) as e:
            raise WeightsError(f"cannot fetch {name} of {repo_id}: {e}") from None
    raise WeightsError(
        f"{repo_id} has no {' or '.join(_HF_WEIGHT_FILES)} (or it is not cached while offline)"
    )


def load_weights(name_or_path: str | os.PathLike[str], revision: str | None = None) -> LoadedWeights:
    """Locate and load weights from a Meta ``.th`` file, a Hugging Face folder or file, or a hub id.

    Short names ``encodec_24khz`` / ``encodec_48khz`` stand for the ``facebook/`` hub ids.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix in (".th", ".pt", ".pth"):
            return load_meta_checkpoint(path)
        if path.name in _HF_WEIGHT_FILES or path.name == "config.json":
            return load_hf_folder(path.parent)
        raise WeightsError(
            f"{path}: not a recognised weights file (.th, model.safetensors, pytorch_model.bin)"
        )
    if path.is_dir():
        if (path / "config.json").is_file():
            return load_hf_folder(path)
        for name in META_CHECKPOINTS.values():
            if (path / name).is_file():
                return load_meta_checkpoint(path / name)
        raise WeightsError(
            f"{path} holds neither a Hugging Face config.json nor a Meta EnCodec .th checkpoint"
        )
    text = str(name_or_path)
    repo_id = HUB_IDS.get(text, text)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id) and not text.startswith((".", "/", "~")):
        return load_hf_folder(download_from_hub(repo_id, revision))
    raise WeightsError(f"no such file or folder, and not a hub id: {text}")
