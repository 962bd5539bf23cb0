"""Which codec family a model source is (EnCodec, Mimi, DAC or SNAC), and one loader for the others.

:func:`detect_family` reads only what is cheap: a known hub id's name, a folder's ``config.json``, a
safetensors header, or the pickle index of a torch zip file (each family's own ``looks_like_*``). For a
hub id of another name it fetches the repository through :func:`rvqkit.weights.download_from_hub` (the
cache first, as EnCodec's loading does) and reads the ``config.json`` that came.

:func:`load_family_model` loads a Mimi, DAC or SNAC source into a
:class:`~rvqkit.family_codec.FamilyCodec` (see docs/families.md). EnCodec sources load with
:meth:`rvqkit.Codec.from_pretrained`, which refuses the other families with a :class:`WeightsError`
pointing here.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import torch

from .errors import WeightsError
from .weights import HUB_IDS, META_CHECKPOINTS, RANDOM_MODELS, download_from_hub

if TYPE_CHECKING:  # family_codec imports rvqkit.codec, which imports this module lazily
    from .family_codec import FamilyCodec

Family = Literal["encodec", "mimi", "dac", "snac"]
FAMILIES: tuple[Family, ...] = ("encodec", "mimi", "dac", "snac")

#: Published hub ids (and short names) whose family is known without reading anything.
KNOWN_IDS: dict[str, Family] = {
    **{k: "encodec" for k in (*HUB_IDS, *HUB_IDS.values(), *RANDOM_MODELS)},
    "kyutai/mimi": "mimi",
    **{f"descript/dac_{r}khz": "dac" for r in (44, 24, 16)},
    **{f"hubertsiuzdak/snac_{r}khz": "snac" for r in (24, 32, 44)},
    **{f"snac_{r}khz": "snac" for r in (24, 32, 44)},  # load_snac's short names
}
_META_NAME = re.compile(r"^encodec_(?:24|48)khz-[0-9a-f]{8}\.th$")
_HF_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_LOOKED_FOR = (
    "a known hub id (facebook/encodec_*, kyutai/mimi, descript/dac_*, hubertsiuzdak/snac_*), a folder whose "
    "config.json is EnCodec's, Mimi's or DAC's (model_type 'encodec', 'mimi', 'dac') or SNAC's (vq_strides, "
    "encoder_rates) beside its weights, a moshi Mimi .safetensors, a descript DAC .pth, or a Meta EnCodec .th"
)


def _config_model_type(folder: Path) -> tuple[bool, str | None]:
    """(whether ``folder/config.json`` is a readable JSON object, its ``model_type``)."""
    cfg = folder / "config.json"
    try:
        if not cfg.is_file() or cfg.stat().st_size > 1 << 20:
            return False, None
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return False, None
    if not isinstance(data, dict):
        return False, None
    model_type = data.get("model_type")
    if model_type is None and "target_bandwidths" in data and "upsampling_ratios" in data:
        model_type = "encodec"  # EnCodec's loader takes a config without model_type as EnCodec's
    return True, model_type if isinstance(model_type, str) else None


def _is_meta_encodec(path: Path) -> bool:
    """A Meta EnCodec checkpoint: its published name, or a torch zip whose pickle index names Meta's
    first encoder convolution (no tensor is read)."""
    if _META_NAME.match(path.name):
        return True
    if path.suffix not in (".th", ".pt", ".pth") or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None or z.getinfo(pkl).file_size > 64 << 20:
                return False
            data = z.read(pkl)
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
    return b"encoder.model.0.conv.conv.weight" in data and b"quantizer.vq.layers.0._codebook" in data


def _local_family(path: Path) -> Family | None:
    """The family of a local file or folder, or None."""
    folder = path if path.is_dir() else path.parent
    has_config, model_type = (
        _config_model_type(folder) if path.is_dir() or path.name in _HF_FILES else (False, None)
    )
    if model_type == "encodec":
        return "encodec"
    if path.is_dir() and not has_config and any((path / n).is_file() for n in META_CHECKPOINTS.values()):
        return "encodec"  # a folder holding Meta's checkpoint, as load_weights takes it
    if path.is_file() and _is_meta_encodec(path):
        return "encodec"
    from .dac import looks_like_dac
    from .mimi import looks_like_mimi
    from .snac import looks_like_snac

    if looks_like_mimi(path) or (path.is_file() and path.name in _HF_FILES and looks_like_mimi(folder)):
        return "mimi"
    if looks_like_dac(path):
        return "dac"
    if looks_like_snac(path):
        return "snac"
    return None


def _hub_id(text: str) -> str | None:
    if _HUB_ID.fullmatch(text) and not text.startswith((".", "/", "~")):
        return text
    return None


def family_of(name_or_path: str | os.PathLike[str], revision: str | None = None) -> Family | None:
    """The family of ``name_or_path``, or None where nothing matches (see :func:`detect_family`)."""
    text = str(name_or_path)
    if text in KNOWN_IDS:
        return KNOWN_IDS[text]
    path = Path(name_or_path).expanduser()
    if path.exists():
        return _local_family(path)
    repo_id = _hub_id(text)
    if repo_id is not None:  # another hub id: its config.json says (the weights are cached for loading)
        return _local_family(download_from_hub(repo_id, revision))
    return None


def detect_family(name_or_path: str | os.PathLike[str], revision: str | None = None) -> Family:
    """``"encodec"``, ``"mimi"``, ``"dac"`` or ``"snac"`` for a hub id, a local folder or a weights file.

    Reads only names, ``config.json`` files and file headers (a hub id of another name is fetched through
    the Hugging Face cache first). Raises :class:`WeightsError` saying what was looked for when no family
    matches (a missing path, an unknown config, an empty folder, a file of no known format)."""
    family = family_of(name_or_path, revision)
    if family is not None:
        return family
    path = Path(name_or_path).expanduser()
    what = "folder" if path.is_dir() else "file" if path.exists() else "path (no such file or folder)"
    raise WeightsError(f"cannot tell the codec family of {what} {name_or_path}: looked for {_LOOKED_FOR}")


def load_family_model(
    name_or_path: str | os.PathLike[str], device: str | torch.device = "cpu", revision: str | None = None
) -> FamilyCodec:
    """A Mimi, DAC or SNAC model from a hub id, folder or weights file, as a
    :class:`~rvqkit.family_codec.FamilyCodec` (``encode`` / ``decode`` / ``encode_items``, facts in Hz).

    The family is :func:`detect_family`'s; each family's own loader reads the files (safely). EnCodec
    sources raise :class:`WeightsError` pointing to :meth:`rvqkit.Codec.from_pretrained`.
    """
    from .family_codec import CLASSES

    source = str(name_or_path)
    path = Path(name_or_path).expanduser()
    family = KNOWN_IDS.get(source)
    if family is None:
        if not path.exists() and _hub_id(source):
            path = download_from_hub(source, revision)  # fetched once; its config.json decides
        family = detect_family(path)
    if family == "encodec":
        raise WeightsError(
            f"{source} is an EnCodec model: load it with rvqkit.Codec.from_pretrained({source!r})"
        )
    if not path.exists():  # a published hub id (or a short SNAC name)
        from .snac import HUB_IDS as SNAC_IDS

        path = download_from_hub(SNAC_IDS.get(source, source), revision)
    model: torch.nn.Module  # the family's own model class; FamilyCodec takes any
    config: object
    if family == "mimi":
        from .mimi import load_mimi

        model, config = load_mimi(path)
    elif family == "dac":
        from .dac import load_dac

        model, config = load_dac(path)
    else:
        from .snac import load_snac

        model, config = load_snac(path)
    return CLASSES[cast(str, family)](model, config, source, device)


def not_encodec_message(name_or_path: str | os.PathLike[str], family: Family) -> str:
    """What :meth:`rvqkit.Codec.from_pretrained` says for a source of another family."""
    names = {"mimi": "Mimi", "dac": "DAC", "snac": "SNAC"}
    return (
        f"{name_or_path} is a {names.get(family, family)} model, not EnCodec: rvqkit.Codec loads EnCodec only. "
        f"Load it with rvqkit.families.load_family_model({str(name_or_path)!r}) (see docs/families.md)"
    )
