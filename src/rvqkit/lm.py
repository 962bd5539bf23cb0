"""The small transformer language model that Meta's ``.ecdc`` files use for entropy coding.

For each time step it predicts, for all codebooks at once, a distribution over the next frame's codes
from the frames before it. Input at step ``t`` is ``1 + codes[t - 1]`` (0 for "no previous frame"),
one embedding per codebook, summed; output is ``[n_q, card]`` probabilities. The transformer is
post-norm (5 layers, width 200, 8 heads, GELU feed-forward of width 800) with sinusoidal positions
and attention limited to the last ``past_context`` steps (3.5 s of frames), plus one all-zero
"past" entry that the reference starts with.

State is explicit (:class:`LMState`): per layer the inputs of the attention seen so far, and the
time offset. The model is evaluated one frame at a time in the same order of operations as the
reference, so the probabilities, and so the arithmetic-coded bytes, are identical to Meta's.

Checkpoints are Meta's ``encodec_lm_24khz-1608e3c0.th`` / ``encodec_lm_48khz-7add9fc3.th``: loaded
with ``torch.load(weights_only=True)``, the 8 hex digits checked against the file's sha256, every
tensor checked by name and shape.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .config import PRESETS, CodecConfig
from .errors import WeightsError
from .weights import check_tensors, sha256_of

LM_CHECKPOINTS = {
    "encodec_24khz": "encodec_lm_24khz-1608e3c0.th",
    "encodec_48khz": "encodec_lm_48khz-7add9fc3.th",
}
_LM_NAME = re.compile(r"^encodec_lm_(?P<khz>24|48)khz-(?P<sha>[0-9a-f]{8})\.th$")


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch on ``n`` CPU threads inside the block (restored after); ``None`` changes nothing.

    LM-coded ``.ecdc`` bytes depend on the float32 rounding of the LM, and that depends on the number
    of threads torch uses (measured: 89 % of the CDFs differ between 1 and 2 threads). A file decodes
    only where the LM runs as it did when the file was written: same thread count, same kind of CPU.
    Meta's tool uses torch's default (the number of cores); so does rvqkit unless told otherwise. One
    thread is also the fastest for this frame-by-frame work on a busy machine.
    """
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def mismatch_hint() -> str:
    """The likely cause and the fix, for an LM-coded stream that fails to decode (appended to the error).

    Names the thread count the LM runs on now: a file decodes only with the count (and kind of CPU) it
    was written with."""
    n = torch.get_num_threads()
    return (
        f" -- if the file is intact, the likely cause is that it was written with another torch thread "
        f"count (or another kind of CPU): the entropy-coding LM ran here on {n} threads, and LM-coded "
        "bytes decode only where the LM computes exactly as when they were written. Decode with the "
        "thread count used to write it (threads=N; Meta's tool and rvqkit default to the "
        "machine's physical cores)"
    )


@dataclass(frozen=True)
class LMConfig:
    """Sizes of the entropy-coding LM (defaults: Meta's published models)."""

    n_q: int = 32  # codebooks it can predict
    card: int = 1024  # codebook size
    dim: int = 200
    num_layers: int = 5
    num_heads: int = 8
    hidden_scale: int = 4
    past_context: int = 262  # frames of attention history: int(3.5 s * frame rate)
    max_period: float = 10000.0

    @classmethod
    def for_codec(cls, cfg: CodecConfig) -> LMConfig:
        """The LM Meta pairs with a codec: one input/output per codebook, 3.5 s of context."""
        return cls(n_q=cfg.num_codebooks, card=cfg.codebook_size, past_context=int(3.5 * cfg.frame_rate))


@dataclass
class LMState:
    """Streaming state: per layer ``[B, <=past_context, dim]`` attention inputs seen, and the step offset."""

    past: list[torch.Tensor] = field(default_factory=list)
    offset: int = 0


class _Layer(nn.Module):
    """One post-norm transformer layer whose attention also sees ``past`` (names as torch's encoder layer)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(cfg.dim, cfg.num_heads, batch_first=True)
        self.linear1 = nn.Linear(cfg.dim, cfg.dim * cfg.hidden_scale)
        self.linear2 = nn.Linear(cfg.dim * cfg.hidden_scale, cfg.dim)
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.past_context = cfg.past_context

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        t, h = x.shape[1], past.shape[1]
        keys = torch.cat([past, x], dim=1)
        # Query i (position h + i) may see keys at distance 0..past_context behind it.
        dist = torch.arange(h, t + h).view(-1, 1) - torch.arange(t + h).view(1, -1)
        blocked = ~((dist >= 0) & (dist <= self.past_context))
        attn = self.self_attn(x, keys, keys, attn_mask=blocked, need_weights=False)[0]
        x = self.norm1(x + attn)
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class _Transformer(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.config = cfg
        self.norm_in = nn.LayerNorm(cfg.dim)
        self.layers = nn.ModuleList([_Layer(cfg) for _ in range(cfg.num_layers)])

    def positions(self, t: int, offset: int) -> torch.Tensor:
        """Sinusoidal embedding ``[1, t, dim]`` of steps ``offset .. offset + t - 1`` (cosines, then sines)."""
        half = self.config.dim // 2
        pos = torch.arange(t).view(1, -1, 1) + offset
        freq_index = torch.arange(half).view(1, 1, -1)
        phase = pos / (self.config.max_period ** (freq_index / (half - 1)))
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)

    def forward(self, x: torch.Tensor, state: LMState) -> tuple[torch.Tensor, LMState]:
        past = state.past or [torch.zeros_like(x[:, :1]) for _ in self.layers]
        x = self.norm_in(x) + self.positions(x.shape[1], state.offset)
        new_past = []
        for layer, layer_past in zip(self.layers, past, strict=True):
            layer_in = x
            x = layer(x, layer_past)
            new_past.append(torch.cat([layer_past, layer_in], dim=1)[:, -self.config.past_context :, :])
        return x, LMState(new_past, state.offset + x.shape[1])


class EntropyLM(nn.Module):
    """Predicts each codebook's next code from the previous frames (see the module docstring); the
    :class:`rvqkit.bitstream.Predictor` the ``.ecdc`` entropy coder takes."""

    def __init__(self, cfg: LMConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or LMConfig()
        c = self.config
        self.transformer = _Transformer(c)
        self.emb = nn.ModuleList([nn.Embedding(c.card + 1, c.dim) for _ in range(c.n_q)])
        self.linears = nn.ModuleList([nn.Linear(c.dim, c.card) for _ in range(c.n_q)])
        self.sha256: str | None = None

    def initial_state(self) -> LMState:
        """State at the start of a segment (Meta resets the LM for each segment)."""
        return LMState()

    def check_codec(self, config: CodecConfig) -> None:
        """Raise ``ValueError`` unless this is the LM Meta pairs with the model ``config``."""
        want = LMConfig.for_codec(config)
        if self.config != want:
            raise ValueError(
                f"the LM given is for another model ({self.config.n_q} codebooks, context "
                f"{self.config.past_context}); {config.name} needs {want.n_q} codebooks, context {want.past_context}"
            )

    def decode_hint(self) -> str:
        """Why an LM-coded stream may not decode although intact: see :func:`mismatch_hint`."""
        return mismatch_hint()

    @torch.inference_mode()
    def step(self, previous: torch.Tensor | None, state: LMState, n_q: int) -> tuple[torch.Tensor, LMState]:
        """Probabilities ``[n_q, card]`` for the next frame, and the new state.

        Args:
            previous: codes ``[n_q]`` of the previous frame, or None at the first frame of a segment.
            state: the state after the previous frame (``initial_state()`` at a segment's start).
            n_q: codebooks in use (at most ``cfg.n_q``).
        """
        if not 1 <= n_q <= self.config.n_q:
            raise ValueError(f"the LM predicts 1..{self.config.n_q} codebooks, not {n_q}")
        if previous is None:
            tokens = torch.zeros(1, n_q, 1, dtype=torch.long)
        else:
            tokens = (previous.to(torch.long) + 1).view(1, n_q, 1)
        x = sum(self.emb[k](tokens[:, k]) for k in range(n_q))  # summed in order, as the reference
        out, state = self.transformer(x, state)
        logits = torch.stack([self.linears[k](out) for k in range(n_q)], dim=1).permute(0, 3, 1, 2)
        probs = torch.softmax(logits, dim=1)  # [1, card, n_q, 1]: softmax on the same layout
        return probs[0, :, :, 0].t(), state


# -- loading -------------------------------------------------------------------------------------------
def lm_checkpoint_name(model_name: str) -> str:
    """Meta's LM file name for a codec (``encodec_24khz`` → ``encodec_lm_24khz-1608e3c0.th``)."""
    try:
        return LM_CHECKPOINTS[model_name]
    except KeyError as e:
        raise WeightsError(f"no entropy-coding LM is known for model {model_name!r}") from e


def load_lm(path: str | os.PathLike[str], model_name: str | None = None) -> EntropyLM:
    """Load Meta's LM checkpoint safely; ``model_name`` (``encodec_24khz``/``encodec_48khz``) picks the sizes.

    Without ``model_name`` the model is taken from the file name (``encodec_lm_24khz-*.th``) or, failing
    that, from the tensors (16 codebooks → 48 kHz). A name with 8 hex digits must match the sha256.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such LM checkpoint")
    digest = sha256_of(p)
    m = _LM_NAME.match(p.name)
    if m and not digest.startswith(m.group("sha")):
        raise WeightsError(
            f"checksum mismatch for {p}: the name says sha256 starts with {m.group('sha')}, "
            f"the file's starts with {digest[:8]} (corrupt or wrong file)"
        )
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncation, non-tensor content refused by weights_only
        raise WeightsError(f"cannot read LM weights from {p}: {e}") from e
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise WeightsError(f"{p} does not hold a state dict of tensors")
    n_q = sum(1 for k in raw if re.fullmatch(r"emb\.\d+\.weight", k))
    if model_name is None:
        model_name = (
            f"encodec_{m.group('khz')}khz" if m else ("encodec_48khz" if n_q == 16 else "encodec_24khz")
        )
    if model_name not in PRESETS:
        raise WeightsError(f"no entropy-coding LM is known for model {model_name!r}")
    cfg = LMConfig.for_codec(PRESETS[model_name])
    lm = EntropyLM(cfg)
    check_tensors(
        lm.state_dict(), raw, f"LM weights {p}", f"{model_name}'s LM", f" (an LM for {model_name}?)"
    )
    lm.load_state_dict({k: v.float() for k, v in raw.items()})
    lm.sha256 = digest
    return lm.eval()


def find_lm(model_name: str, near: str | os.PathLike[str] | None = None) -> Path | None:
    """Where Meta's LM checkpoint for ``model_name`` is, if found locally.

    Looked for, in order: beside ``near`` (the codec weights: a ``.th`` file's folder or a model folder),
    ``$RVQKIT_LM_DIR``, and torch's hub cache (``~/.cache/torch/hub/checkpoints``, where Meta's own
    tool stores it). The exact name (``encodec_lm_24khz-1608e3c0.th``) wins over other hashes.
    """
    folders: list[Path] = []
    if near is not None:
        n = Path(near)
        folders.append(n if n.is_dir() else n.parent)
    if os.environ.get("RVQKIT_LM_DIR"):
        folders.append(Path(os.environ["RVQKIT_LM_DIR"]))
    folders.append(Path(torch.hub.get_dir()) / "checkpoints")
    exact = lm_checkpoint_name(model_name)
    khz = model_name.split("_")[-1]
    for folder in folders:
        if (folder / exact).is_file():
            return folder / exact
        others = sorted(folder.glob(f"encodec_lm_{khz}-*.th")) if folder.is_dir() else []
        if others:
            return others[0]
    return None
