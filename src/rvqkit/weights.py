"""Find EnCodec weights (hub id, Hugging Face folder, Meta ``.th`` file), load them safely, and map them
onto :class:`rvqkit.model.EncodecModel` with weight norm folded into plain weights.

Two key schemes exist: Hugging Face's (``encoder.layers.0.conv.weight_g`` or, from newer transformers,
``...conv.parametrizations.weight.original0``) and Meta's (``encoder.model.0.conv.conv.weight_g``).
Both are translated to rvqkit's own names, and every tensor is accounted for: a missing, unknown or
wrong-shape tensor is a :class:`~rvqkit.errors.WeightsError` naming it.

``random-24khz`` / ``random-48khz`` build seeded random weights (no download, the audio is noise): a way
to see every part of rvqkit work before fetching the real weights.
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
META_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"  # where Meta's encodec tool fetches its checkpoints
RANDOM_MODELS = {"random-24khz": "encodec_24khz", "random-48khz": "encodec_48khz"}
RANDOM_WARNING = "random weights: the audio will be noise"
RANDOM_RECIPE = 1  # bump when random_weights() changes what it builds (it is part of the recorded sha256)


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
        raise WeightsError(f"cannot read weights from {path}: {e}") from e
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
        raise WeightsError(f"cannot read weights from {path}: {e}") from e


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


def to_rvqkit_state_dict(raw: dict[str, torch.Tensor], num_codebooks: int) -> dict[str, torch.Tensor]:
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
        missing = [i for i in range(num_codebooks) if i not in codebooks]
        extra = [i for i in codebooks if i >= num_codebooks]
        if missing:
            raise WeightsError(f"missing tensor in weights: quantizer layer {missing[0]} codebook embed")
        if extra:
            raise WeightsError(
                f"unknown tensor in weights: quantizer layer {extra[0]} (model has {num_codebooks})"
            )
        out["quantizer.codebooks"] = torch.stack([codebooks[i] for i in range(num_codebooks)])
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
    return LoadedWeights(config, to_rvqkit_state_dict(raw, config.num_codebooks), str(path), digest)


def load_hf_folder(folder: Path) -> LoadedWeights:
    """A Hugging Face model folder: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``)."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise WeightsError(f"{folder} has no config.json (expected a Hugging Face EnCodec model folder)")
    try:
        cfg_dict = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot parse {cfg_path}: {e}") from e
    config = CodecConfig.from_hf_dict(cfg_dict)
    for name in _HF_WEIGHT_FILES:
        wpath = folder / name
        if wpath.is_file():
            raw = _safetensors_load(wpath) if name.endswith(".safetensors") else _torch_load(wpath)
            return LoadedWeights(
                config, to_rvqkit_state_dict(raw, config.num_codebooks), str(folder), sha256_of(wpath)
            )
    raise WeightsError(f"{folder} has config.json but no {' or '.join(_HF_WEIGHT_FILES)}")


HUB_PROBE_TIMEOUT = 1.5  # seconds to wait for the hub's answer before calling it unreachable


def hub_cache_dir() -> str:
    """Where ``huggingface_hub`` keeps downloaded models (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def offline_help(repo_id: str) -> str:
    """How to get ``repo_id``'s weights onto a machine without network (for the one error message)."""
    name = repo_id.split("/")[-1]
    folder = "models--" + repo_id.replace("/", "--")
    meta = (
        f" Or download Meta's checkpoint {META_URL}{META_CHECKPOINTS[name]} and give its path as the model."
        if name in META_CHECKPOINTS
        else ""
    )
    random = "random-48khz" if "48" in name else "random-24khz"
    return (
        f"on a machine with network, run `huggingface-cli download {repo_id}` (or `hf download {repo_id}`) "
        f"and copy the folder {folder} of its cache (~/.cache/huggingface/hub) into {hub_cache_dir()} here "
        f"(or point HF_HUB_CACHE at it); HF_HUB_OFFLINE=1 then uses the cache without asking the hub.{meta} "
        f"To try rvqkit with no download: model '{random}' (seeded random weights; the audio is noise)"
    )


def _cached(repo_id: str, revision: str | None) -> Path | None:
    """The cached snapshot folder holding config.json and a weights file, or None (no network used)."""
    from huggingface_hub import try_to_load_from_cache

    cfg = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if not isinstance(cfg, str):
        return None
    for name in _HF_WEIGHT_FILES:
        if isinstance(try_to_load_from_cache(repo_id, name, revision=revision), str):
            return Path(cfg).parent
    return None


def _probe_hub(repo_id: str, revision: str | None) -> None:
    """One request to the hub, without huggingface_hub's retries (which take about 25 s when the hub
    cannot be reached): a :class:`WeightsError` with :func:`offline_help` if no answer comes.

    Waits :data:`HUB_PROBE_TIMEOUT` seconds, or ``HF_HUB_ETAG_TIMEOUT`` if the user set it (a slow link).
    An answer of any kind (the file, 404, 401) means the hub is reachable; the download reports it.
    The request is the standard library's (it honours the usual proxy variables), not
    huggingface_hub's: building its headers first asks the hub for another file with a 3 s timeout.
    """
    import socket
    import urllib.error
    import urllib.request

    from huggingface_hub import constants, hf_hub_url

    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or HUB_PROBE_TIMEOUT)
    url = hf_hub_url(repo_id, "config.json", revision=revision)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return
    except urllib.error.HTTPError:  # the hub answered (404, 401, 5xx): the download will say what
        return
    except (OSError, ValueError) as e:  # URLError, refused, DNS failure, timeout
        reason = getattr(e, "reason", e)
        why = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
        if isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason):
            why += f"; no answer in {timeout:g} s (set HF_HUB_ETAG_TIMEOUT=30 on a slow link)"
        raise WeightsError(
            f"{repo_id} is not in the Hugging Face cache and the hub ({constants.ENDPOINT}) cannot be "
            f"reached ({why}). To get the weights: {offline_help(repo_id)}"
        ) from e


def download_from_hub(repo_id: str, revision: str | None = None) -> Path:
    """Fetch a hub model's config and weights through ``huggingface_hub`` (its cache, its offline mode).

    A model already in the cache is used without asking the hub (EnCodec's published weights do not
    change). Otherwise one short request checks that the hub answers before downloading, so that
    without network the error comes at once and says how to get the weights (:func:`offline_help`).
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    cached = _cached(repo_id, revision)
    if cached is not None:
        return cached
    if constants.is_offline_mode():
        raise WeightsError(
            f"{repo_id} is not in the Hugging Face cache ({hub_cache_dir()}) and HF_HUB_OFFLINE is set. "
            f"To get the weights: {offline_help(repo_id)}"
        )
    _probe_hub(repo_id, revision)
    try:
        cfg = hf_hub_download(repo_id, "config.json", revision=revision)
    except LocalEntryNotFoundError as e:
        raise WeightsError(
            f"{repo_id} is not in the Hugging Face cache and cannot be downloaded. "
            f"To get the weights: {offline_help(repo_id)}"
        ) from e
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise WeightsError(f"cannot fetch {repo_id} from the Hugging Face hub: {e}") from e
    for name in _HF_WEIGHT_FILES:
        try:
            hf_hub_download(repo_id, name, revision=revision)
            return Path(cfg).parent
        except (EntryNotFoundError, LocalEntryNotFoundError):
            continue
        except (HfHubHTTPError, OSError, ValueError) as e:
            raise WeightsError(f"cannot fetch {name} of {repo_id}: {e}") from e
    raise WeightsError(f"{repo_id} has no {' or '.join(_HF_WEIGHT_FILES)}")


# -- seeded random weights ------------------------------------------------------------------------------
def is_random_model(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` names seeded random weights (``random-24khz``, ``random-48khz``)."""
    return str(name) in RANDOM_MODELS


@torch.no_grad()
def random_weights(name: str = "random-24khz", seed: int = 0) -> LoadedWeights:
    """Seeded random weights for the architecture of ``name`` (``random-24khz`` / ``random-48khz``).

    For trying every command without a download: codes, files and reports are real, the audio is noise.
    Convolutions and the LSTM get torch's default initialisation from ``seed``; codebook k holds encoder
    outputs of a seeded test signal after codebooks 0..k-1 (as k-means would start), so many distinct
    codes are used; the decoder's last layer is scaled so that its output peaks near 0.5.

    The recorded sha256 is that of the recipe (``name``, ``seed``, :data:`RANDOM_RECIPE`), not of the
    tensors: the tensors' last bits depend on the CPU's rounding, the recipe does not, so codes made on
    one machine decode with the same recipe on another.
    """
    if name not in RANDOM_MODELS:
        raise WeightsError(f"unknown random model {name!r}; choose one of {', '.join(RANDOM_MODELS)}")
    config = PRESETS[RANDOM_MODELS[name]]
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        model = EncodecModel(config).eval()  # torch's default init draws uniform numbers only
        sr, channels = config.sampling_rate, config.audio_channels
        t = torch.arange(sr, dtype=torch.float64) / sr  # 1 s
        tones = [torch.sin(2 * torch.pi * (110.0 * (c + 1) + 700.0 * t) * t) for c in range(channels)]
        x = 0.3 * torch.stack(tones) + 0.05 * (2 * torch.rand(channels, t.numel(), dtype=torch.float64) - 1)
        x = x.float()[None]
        if config.segment_length:  # one segment's worth, scaled as the model scales it
            x = x[..., : config.segment_length]
        emb, _ = model.normalized(x)
        residual = model.encoder(emb)[0].t()  # [frames, dim]
        books = model.quantizer.codebooks
        for k in range(books.shape[0]):
            pick = torch.randint(0, residual.shape[0], (books.shape[1],))
            noise = (2 * torch.rand(books.shape[1:]) - 1) * residual.std() * 0.2
            books[k] = residual[pick] + noise
            residual = residual - books[k][torch.cdist(residual, books[k]).argmin(dim=1)]
        codes, scales = model.encode(x, books.shape[0])
        peak = float(model.decode(codes, scales, x.shape[-1]).abs().max())
        last = model.decoder.layers[-1].conv
        # the decoder ends in an SConv1d (rvqkit.nn.conv), whose Conv1d has a bias
        assert isinstance(last, torch.nn.Conv1d) and last.bias is not None
        if peak > 0:
            last.weight.mul_(0.5 / peak)
            last.bias.mul_(0.5 / peak)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    recipe = f"rvqkit {name} seed {seed} recipe {RANDOM_RECIPE}"
    return LoadedWeights(config, state, f"{name} (seed {seed})", hashlib.sha256(recipe.encode()).hexdigest())


def load_weights(name_or_path: str | os.PathLike[str], revision: str | None = None) -> LoadedWeights:
    """Locate and load weights from a Meta ``.th`` file, a Hugging Face folder or file, or a hub id.

    Short names ``encodec_24khz`` / ``encodec_48khz`` stand for the ``facebook/`` hub ids;
    ``random-24khz`` / ``random-48khz`` are seeded random weights (:func:`random_weights`).
    """
    if is_random_model(name_or_path):
        return random_weights(str(name_or_path))
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
