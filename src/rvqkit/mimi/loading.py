"""Load Mimi weights from the two published formats, safely, and write them back (for tests and tools).

- transformers: a folder with ``config.json`` (``model_type`` ``"mimi"``) and ``model.safetensors``, as
  ``transformers.MimiModel.save_pretrained`` writes it (``kyutai/mimi`` on the hub). Flat key names:
  ``encoder.layers.N...``, ``encoder_transformer.layers.N.self_attn.q_proj.weight``,
  ``quantizer.semantic_residual_vector_quantizer.layers.0.codebook.embed_sum``, ...
- moshi: one ``.safetensors`` file (``tokenizer-e351c8d8-checkpoint125.safetensors``), key names as
  moshi's modules: ``encoder.model.N.conv.conv.weight``, ``decoder.model.N.convtr.convtr.weight``,
  ``downsample.conv.conv.conv.weight``, ``quantizer.rvq_first.vq.layers.0._codebook.embedding_sum``,
  ``encoder_transformer.transformer.layers.N.self_attn.in_proj_weight`` (fused q|k|v), ``linear1``,
  ``norm1``, ``layer_scale_1``, ... The moshi file has no config: its shape is read from the tensors,
  the rest (heads, RoPE base, window) is the published config's.

Only safetensors files are read (no pickle). Every tensor is accounted for: a missing, unknown or
wrong-shape tensor is a :class:`~rvqkit.errors.WeightsError` naming it, and a file of another family
says so.

Conversions (as transformers' ``convert_mimi_checkpoint_to_pytorch.py``): moshi's fused ``in_proj`` is
split into q, k, v and the q and k rows are permuted (``view(heads, head_dim/2, 2, D).transpose(1, 2)``)
so that transformers' "rotate half" RoPE computes moshi's interleaved RoPE; codebook entries are
``embed_sum / cluster_usage.clamp(min=1e-5)``, as both references compute them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch

from ..atomic import write_atomic
from ..errors import WeightsError
from ..weights import _safetensors_load, check_tensors, sha256_of
from .config import KYUTAI_MIMI, MimiConfig
from .model import MimiModel

HF_WEIGHTS = "model.safetensors"
MOSHI_NAME = "tokenizer-e351c8d8-checkpoint125.safetensors"  # moshi.models.loaders.MIMI_NAME
_HF_RVQ = {"semantic": "semantic_residual_vector_quantizer", "acoustic": "acoustic_residual_vector_quantizer"}
_MOSHI_RVQ = {"semantic": "rvq_first", "acoustic": "rvq_rest"}
_EPS = 1e-5  # the codebooks' cluster_usage clamp (MimiEuclideanCodebook / EuclideanCodebook epsilon)


@dataclasses.dataclass(frozen=True)
class LoadedMimi:
    """Where a loaded model came from: ``format`` ("transformers" or "moshi"), path and weights sha256."""

    format: str
    source: str
    sha256: str


# -- helpers ------------------------------------------------------------------------------------------------
def _codebook(entries: dict[str, torch.Tensor], where: str) -> torch.Tensor:
    """Codebook entries from a codebook's buffers (names of either reference, legacy ones included)."""
    total = next((entries[k] for k in ("embed_sum", "embedding_sum", "embed_avg") if k in entries), None)
    usage = next((entries[k] for k in ("cluster_usage", "cluster_size") if k in entries), None)
    if total is None or usage is None:
        missing = "embed_sum" if total is None else "cluster_usage"
        raise WeightsError(f"missing tensor in weights: {where}.{missing}")
    if total.ndim != 2 or usage.shape != total.shape[:1]:
        raise WeightsError(
            f"codebook {where} has embed_sum {tuple(total.shape)} and cluster_usage {tuple(usage.shape)}"
        )
    return total.float() / usage.float().clamp(min=_EPS)[:, None]


def _collect_codebooks(
    raw: dict[str, torch.Tensor],
    pattern: re.Pattern[str],
    out: dict[str, torch.Tensor],
    names: dict[str, str],
) -> dict[str, torch.Tensor]:
    """Move the codebook buffers matched by ``pattern`` (groups: rvq, layer index, buffer) out of ``raw``,
    returning ``raw``'s other tensors; ``out`` receives ``quantizer.<part>.codebooks``."""
    found: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    rest: dict[str, torch.Tensor] = {}
    part_of = {v: k for k, v in names.items()}
    for key, value in raw.items():
        m = pattern.match(key)
        if m and m.group(1) in part_of:
            found.setdefault((part_of[m.group(1)], int(m.group(2))), {})[m.group(3)] = value
        else:
            rest[key] = value
    for part in ("semantic", "acoustic"):
        idx = sorted(i for p, i in found if p == part)
        if idx != list(range(len(idx))):
            raise WeightsError(f"codebooks of quantizer {names[part]} are not numbered 0..n-1: {idx}")
        if idx:
            out[f"quantizer.{part}.codebooks"] = torch.stack(
                [_codebook(found[(part, i)], f"{names[part]}.layers.{i}") for i in idx]
            )
    return rest


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot parse {path}: {e}") from e
    if not isinstance(d, dict):
        raise WeightsError(f"{path} is not a JSON object")
    return d


def build_mimi(config: MimiConfig, state_dict: dict[str, torch.Tensor], where: str = "weights") -> MimiModel:
    """A :class:`MimiModel` holding ``state_dict`` (rvqkit names), checked tensor by tensor."""
    model = MimiModel(config)
    for part, want in (
        ("semantic", config.num_semantic_quantizers),
        ("acoustic", config.num_quantizers - config.num_semantic_quantizers),
    ):
        books = state_dict.get(f"quantizer.{part}.codebooks")
        if books is not None and books.shape[0] != want:
            raise WeightsError(
                f"{where} holds {books.shape[0]} {part} codebooks, the config {want} (num_quantizers "
                f"{config.num_quantizers}, num_semantic_quantizers {config.num_semantic_quantizers})"
            )
    check_tensors(model.state_dict(), state_dict, where=where, owner="the Mimi model")
    model.load_state_dict({k: v.float() for k, v in state_dict.items()})
    return model.eval()


# -- transformers ------------------------------------------------------------------------------------------
_HF_CODEBOOK = re.compile(r"^quantizer\.(\w+)\.layers\.(\d+)\.codebook\.(\w+)$")


def from_hf_state_dict(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' Mimi tensors in rvqkit's names (only the quantizer's names differ)."""
    out: dict[str, torch.Tensor] = {}
    raw = {k: v for k, v in raw.items() if not (_HF_CODEBOOK.match(k) and k.endswith(".initialized"))}
    for key, value in _collect_codebooks(raw, _HF_CODEBOOK, out, _HF_RVQ).items():
        for part, name in _HF_RVQ.items():
            key = key.replace(f"quantizer.{name}.", f"quantizer.{part}.")
        out[key] = value
    return out


def to_hf_state_dict(model: MimiModel) -> dict[str, torch.Tensor]:
    """The model's tensors in transformers' names (codebooks as ``embed_sum`` with ``cluster_usage`` 1)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        m = re.match(r"^quantizer\.(semantic|acoustic)\.(.*)$", key)
        if not m:
            out[key] = value.detach().clone().contiguous()
            continue
        name = _HF_RVQ[m.group(1)]
        if m.group(2) != "codebooks":
            out[f"quantizer.{name}.{m.group(2)}"] = value.detach().clone().contiguous()
            continue
        for i, book in enumerate(value):
            prefix = f"quantizer.{name}.layers.{i}.codebook."
            out[prefix + "embed_sum"] = book.detach().clone().contiguous()
            out[prefix + "cluster_usage"] = torch.ones(book.shape[0])
            out[prefix + "initialized"] = torch.ones(1)
    return out


def load_hf_folder(folder: Path) -> tuple[MimiModel, MimiConfig]:
    """A transformers Mimi folder: ``config.json`` + ``model.safetensors``."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise WeightsError(f"{folder} has no config.json (expected a transformers Mimi folder)")
    config = MimiConfig.from_hf_config(_read_json(cfg_path))
    wpath = folder / HF_WEIGHTS
    if not wpath.is_file():
        raise WeightsError(f"{folder} has config.json but no {HF_WEIGHTS}")
    return build_mimi(config, from_hf_state_dict(_safetensors_load(wpath)), str(wpath)), config


# -- moshi ----------------------------------------------------------------------------------------------------
_MOSHI_CODEBOOK = re.compile(r"^quantizer\.(\w+)\.vq\.layers\.(\d+)\._codebook\.(\w+)$")
_MOSHI_IGNORED = {"_initialized", "inited"}
_MOSHI_RULES = [
    (re.compile(r"^(encoder|decoder)\.model\."), r"\1.layers."),
    (
        re.compile(r"\.conv\.conv\.conv\.|\.conv\.conv\.|\.convtr\.convtr\.convtr\.|\.convtr\.convtr\."),
        ".conv.",
    ),
    (re.compile(r"^(encoder|decoder)_transformer\.transformer\."), r"\1_transformer."),
    (re.compile(r"\.self_attn\.(?:out_proj|out_projs\.0)\."), ".self_attn.o_proj."),
    (re.compile(r"\.linear1\."), ".mlp.fc1."),
    (re.compile(r"\.linear2\."), ".mlp.fc2."),
    (re.compile(r"\.norm1\."), ".input_layernorm."),
    (re.compile(r"\.norm2\."), ".post_attention_layernorm."),
    (re.compile(r"\.layer_scale_1\."), ".self_attn_layer_scale."),
    (re.compile(r"\.layer_scale_2\."), ".mlp_layer_scale."),
    (re.compile(r"^quantizer\.rvq_first\."), "quantizer.semantic."),
    (re.compile(r"^quantizer\.rvq_rest\."), "quantizer.acoustic."),
]
_IN_PROJ = re.compile(r"^(.*)\.self_attn\.(?:in_proj_weight|in_proj\.weight|in_projs\.0\.weight)$")


def _rope_permutation(w: torch.Tensor, heads: int, inverse: bool = False) -> torch.Tensor:
    """Rows of a q or k projection from moshi's interleaved RoPE pairs to transformers' halves (or back)."""
    rows, cols = w.shape
    half = rows // heads // 2
    if inverse:
        return w.reshape(heads, 2, half, cols).transpose(1, 2).reshape(rows, cols)
    return w.reshape(heads, half, 2, cols).transpose(1, 2).reshape(rows, cols)


def from_moshi_state_dict(raw: dict[str, torch.Tensor], heads: int) -> dict[str, torch.Tensor]:
    """moshi's Mimi tensors in rvqkit's names (q/k/v split and permuted, codebooks computed)."""
    out: dict[str, torch.Tensor] = {}
    raw = {
        k: v
        for k, v in raw.items()
        if not (_MOSHI_CODEBOOK.match(k) and k.rsplit(".", 1)[1] in _MOSHI_IGNORED)
    }
    for key, value in _collect_codebooks(raw, _MOSHI_CODEBOOK, out, _MOSHI_RVQ).items():
        m = _IN_PROJ.match(key)
        if m:
            prefix = re.sub(
                r"^(encoder|decoder)_transformer\.transformer\.", r"\1_transformer.", m.group(1) + "."
            )
            prefix = prefix[:-1]
            if value.ndim != 2 or value.shape[0] % 3:
                raise WeightsError(f"tensor {key} has shape {tuple(value.shape)}, expected [3 * dim, dim]")
            q, k, v = value.chunk(3)
            out[f"{prefix}.self_attn.q_proj.weight"] = _rope_permutation(q, heads)
            out[f"{prefix}.self_attn.k_proj.weight"] = _rope_permutation(k, heads)
            out[f"{prefix}.self_attn.v_proj.weight"] = v
            continue
        for rule, repl in _MOSHI_RULES:
            key = rule.sub(repl, key)
        out[key] = value
    return out


def to_moshi_state_dict(model: MimiModel) -> dict[str, torch.Tensor]:
    """The model's tensors in moshi's names (the published file's: fused ``in_proj_weight``,
    ``out_proj.weight``, ``embedding_sum``/``cluster_usage``/``_initialized``)."""
    heads = model.config.num_attention_heads
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight")):
            continue
        if key.endswith("self_attn.q_proj.weight"):
            base = key[: -len(".q_proj.weight")]
            q = _rope_permutation(value, heads, inverse=True)
            k = _rope_permutation(sd[base + ".k_proj.weight"], heads, inverse=True)
            name = re.sub(r"^(encoder|decoder)_transformer\.", r"\1_transformer.transformer.", base)
            out[name + ".in_proj_weight"] = torch.cat([q, k, sd[base + ".v_proj.weight"]]).contiguous()
            continue
        m = re.match(r"^quantizer\.(semantic|acoustic)\.(.*)$", key)
        if m:
            rvq = _MOSHI_RVQ[m.group(1)]
            if m.group(2) == "codebooks":
                for i, book in enumerate(value):
                    prefix = f"quantizer.{rvq}.vq.layers.{i}._codebook."
                    out[prefix + "embedding_sum"] = book.clone().contiguous()
                    out[prefix + "cluster_usage"] = torch.ones(book.shape[0])
                    out[prefix + "_initialized"] = torch.ones(1)
            else:
                out[f"quantizer.{rvq}.{m.group(2)}"] = value.clone().contiguous()
            continue
        name = key
        if key.startswith(("encoder.layers.", "decoder.layers.")):
            layer = model.get_submodule(key.rsplit(".", 2)[0])  # the MimiConv1d / MimiConvTranspose1d
            is_tr = type(layer).__name__ == "MimiConvTranspose1d"
            name = re.sub(r"^(encoder|decoder)\.layers\.", r"\1.model.", key)
            name = name.replace(".conv.", ".convtr.convtr." if is_tr else ".conv.conv.")
        elif key.startswith("downsample."):
            name = key.replace("downsample.conv.", "downsample.conv.conv.conv.")
        elif key.startswith("upsample."):
            name = key.replace("upsample.conv.", "upsample.convtr.convtr.convtr.")
        else:
            name = re.sub(r"^(encoder|decoder)_transformer\.", r"\1_transformer.transformer.", name)
            for ours, theirs in (
                (".self_attn.o_proj.", ".self_attn.out_proj."),
                (".mlp.fc1.", ".linear1."),
                (".mlp.fc2.", ".linear2."),
                (".input_layernorm.", ".norm1."),
                (".post_attention_layernorm.", ".norm2."),
                (".self_attn_layer_scale.", ".layer_scale_1."),
                (".mlp_layer_scale.", ".layer_scale_2."),
            ):
                name = name.replace(ours, theirs)
        out[name] = value.clone().contiguous()
    return out


def _moshi_config(raw: dict[str, torch.Tensor], path: Path, base: MimiConfig) -> MimiConfig:
    """The shape of a moshi-format model, read from its tensors; heads, RoPE base, window and norm eps
    (not visible in shapes) are ``base``'s (the published config's by default)."""

    def get(key: str) -> torch.Tensor:
        if key not in raw:
            raise WeightsError(f"{path} is not a moshi Mimi checkpoint (no tensor {key})")
        return raw[key]

    first = get("encoder.model.0.conv.conv.weight")
    hidden = get("downsample.conv.conv.conv.weight").shape[0]
    top = sorted(
        int(m.group(1)) for k in raw if (m := re.match(r"^encoder\.model\.(\d+)\.conv\.conv\.weight$", k))
    )
    ratios = tuple(raw[f"encoder.model.{i}.conv.conv.weight"].shape[-1] // 2 for i in top[1:-1])[::-1]
    res_blocks = {int(m.group(1)) for k in raw if (m := re.match(r"^encoder\.model\.(\d+)\.block\.", k))}
    layers = {
        int(m.group(1))
        for k in raw
        if (m := re.match(r"^encoder_transformer\.transformer\.layers\.(\d+)\.", k))
    }
    books = {
        (m.group(1), int(m.group(2)))
        for k in raw
        if (m := _MOSHI_CODEBOOK.match(k)) and m.group(3) != "_initialized"
    }
    n_sem = sum(1 for p, _ in books if p == "rvq_first")
    entries = get(
        "quantizer.rvq_first.vq.layers.0._codebook."
        + (
            "embedding_sum"
            if "quantizer.rvq_first.vq.layers.0._codebook.embedding_sum" in raw
            else "embed_sum"
        )
    )
    ffn = get("encoder_transformer.transformer.layers.0.linear1.weight")
    down = get("downsample.conv.conv.conv.weight")
    up = get("upsample.convtr.convtr.convtr.weight")
    try:
        return dataclasses.replace(
            base,
            channels=first.shape[1],
            num_filters=first.shape[0],
            hidden_size=hidden,
            upsampling_ratios=ratios,
            kernel_size=first.shape[-1],
            last_kernel_size=raw[f"encoder.model.{top[-1]}.conv.conv.weight"].shape[-1],
            num_residual_layers=max(1, len(res_blocks) // max(1, len(ratios))),
            num_hidden_layers=len(layers),
            intermediate_size=ffn.shape[0],
            head_dim=hidden // base.num_attention_heads,
            codebook_size=entries.shape[0],
            codebook_dim=entries.shape[1],
            num_quantizers=len(books),
            num_semantic_quantizers=n_sem,
            latent_stride=down.shape[-1] // 2,
            upsample_groups=hidden // up.shape[1],
        )
    except (IndexError, ZeroDivisionError) as e:
        raise WeightsError(f"{path} does not have the shape of a Mimi checkpoint: {e}") from e


def load_moshi_file(path: Path, config: MimiConfig | None = None) -> tuple[MimiModel, MimiConfig]:
    """moshi's single ``.safetensors`` Mimi file; ``config`` defaults to the published config with the
    shape read from the tensors."""
    raw = _safetensors_load(path)
    config = config or _moshi_config(raw, path, KYUTAI_MIMI)
    sd = from_moshi_state_dict(raw, config.num_attention_heads)
    return build_mimi(config, sd, str(path)), config


# -- entry points ----------------------------------------------------------------------------------------------
def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return list(f.keys())
    except Exception:  # not a safetensors file: then not a Mimi file either
        return []


def looks_like_mimi(path: str | Path) -> bool:
    """Whether ``path`` looks like Mimi weights (reads only a config.json or a safetensors header): a folder
    whose config.json says ``model_type`` ``"mimi"``, or a ``.safetensors`` file with Mimi's quantizer."""
    p = Path(path)
    if p.is_dir():
        cfg = p / "config.json"
        try:
            return cfg.is_file() and json.loads(cfg.read_text()).get("model_type") == "mimi"
        except (OSError, ValueError, AttributeError):
            return False
    if p.is_file() and p.suffix == ".safetensors":
        keys = _safetensors_keys(p)
        return any(
            k.startswith(("quantizer.rvq_first.", "quantizer.semantic_residual_vector_quantizer."))
            for k in keys
        )
    return False


def load_mimi(path: str | Path, config: MimiConfig | None = None) -> tuple[MimiModel, MimiConfig]:
    """Mimi from a local transformers folder (or its ``model.safetensors``) or moshi ``.safetensors`` file.

    Returns the model (eval mode, float32) and its config; ``model.loaded`` says which format and file.
    ``config`` applies to moshi files only (they carry none). Raises :class:`WeightsError` for a missing
    path, a file of another format or family, and any missing, unknown or wrong-shape tensor.
    """
    p = Path(path)
    if p.is_dir():
        model, config = load_hf_folder(p)
        wfile, fmt = p / HF_WEIGHTS, "transformers"
    elif p.is_file():
        if p.suffix != ".safetensors":
            raise WeightsError(f"{p}: Mimi weights are read from .safetensors files only (safe loading)")
        keys = _safetensors_keys(p)
        if not keys:
            raise WeightsError(f"{p} is not a readable safetensors file")
        if any(k.startswith("quantizer.rvq_first.") for k in keys):
            model, config = load_moshi_file(p, config)
            wfile, fmt = p, "moshi"
        elif any(k.startswith("quantizer.semantic_residual_vector_quantizer.") for k in keys):
            if not (p.parent / "config.json").is_file():
                raise WeightsError(
                    f"{p} is transformers-format Mimi weights without its config.json beside it"
                )
            model, config = load_hf_folder(p.parent)
            wfile, fmt = p, "transformers"
        else:
            raise WeightsError(f"{p} is not a Mimi checkpoint (no Mimi quantizer tensors)")
    else:
        raise WeightsError(f"no such file or folder: {p}")
    model.loaded = LoadedMimi(fmt, str(p), sha256_of(wfile))
    return model, config


def save_hf_folder(model: MimiModel, folder: str | Path) -> Path:
    """Write ``model`` as transformers' ``save_pretrained`` does: ``config.json`` + ``model.safetensors``
    (``transformers.MimiModel.from_pretrained(folder)`` loads it with no missing or unexpected keys)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(
        folder / "config.json", lambda tmp: tmp.write_text(json.dumps(model.config.to_hf_config(), indent=2))
    )
    write_atomic(
        folder / HF_WEIGHTS, lambda tmp: save_file(to_hf_state_dict(model), str(tmp), {"format": "pt"})
    )
    return folder


def save_moshi_file(model: MimiModel, path: str | Path) -> Path:
    """Write ``model`` as moshi's single Mimi ``.safetensors`` file (moshi's key names)."""
    from safetensors.torch import save_file

    path = Path(path)
    write_atomic(path, lambda tmp: save_file(to_moshi_state_dict(model), str(tmp), {"format": "pt"}))
    return path
