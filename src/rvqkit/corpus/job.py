"""A corpus job as typed, validated data: the caller's settings (:class:`JobSettings`), and those
settings resolved against the model and the source (:class:`CorpusJob`), which is what
``manifest.json`` records and what a re-run must match to resume.

Errors name the field (``shard_size must be at least 1, got 0``); the command line rewrites field
names as its flags (:func:`rvqkit.cli.messages.cli_message`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .. import __version__
from ..codec import Codec
from .encoding import CPU_LSTM_BATCH
from .items import CorpusError
from .models import CorpusModel, family_name, family_weights_sha256, is_family, resolve_n_q
from .shards import FORMAT, FORMAT_VERSION, ShardLayout
from .sources import Source
from .tokenize import TokenSpec, token_columns

DEFAULT_SHARD_SIZE = 1000
#: Items of the first shard: on disk after a few seconds to minutes of work, whatever shard_size is.
DEFAULT_FIRST_SHARD_SIZE = 16
DEFAULT_WINDOW = 256
DEFAULT_MIN_DURATION = 0.05  # seconds
ENGINES = ("local", "ray")
#: The manifest's description of the ``codes`` column (None when it is not written).
CODES_COLUMN = {"column": "codes", "type": "list<list<int16>>", "layout": "[n_q][frames]"}
#: The same for SNAC: one list per level, coarsest first, each at its own frame rate.
SNAC_CODES_COLUMN = {
    "column": "codes",
    "type": "list<list<int16>>",
    "layout": "[level][frames_level]",
    "levels": "coarsest first; level i has ceil(num_frames / vq_strides[i]) frames",
}
#: Manifest keys that must be equal for a re-run to resume an output folder.
JOB_KEYS = (
    "model",
    "family",
    "bandwidth",
    "n_q",
    "lstm_batched",
    "codes",
    "shard_size",
    "first_shard_size",
    "num_items",
    "source",
    "filters",
    "tokens",
)


@dataclass(frozen=True)
class JobSettings:
    """The settings of :func:`~rvqkit.corpus.encode_corpus` (see it for each one), checked when built,
    before a model is loaded or a source listed."""

    bandwidth: float | None = None  # kbps; None: EnCodec's 6 kbps, a family's n_q
    n_q: int | None = None  # codebooks (SNAC: levels) of a Mimi, DAC or SNAC model; None: all
    device: str = "cpu"
    shard_size: int = DEFAULT_SHARD_SIZE  # items
    first_shard_size: int | None = None  # items; None: a resumed job's own, else the default
    workers: int | None = None
    threads: int | None = None
    lstm_batch: int = CPU_LSTM_BATCH  # items
    window: int = DEFAULT_WINDOW  # items
    batch_seconds: float | None = None
    min_duration: float = DEFAULT_MIN_DURATION  # seconds
    max_duration: float | None = None  # seconds
    audio_column: str | None = None
    split: str | None = None
    tokens: tuple[Any, ...] = ()  # layout names or TokenLayout objects
    token_offset: int = 0
    token_begin: bool | int = False
    token_end: bool | int = False
    codes: bool = True
    engine: str = "local"
    ray_address: str | None = None
    num_actors: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        for name in ("shard_size", "window", "lstm_batch"):
            _at_least_1(name, getattr(self, name))
        for name in ("first_shard_size", "threads", "n_q"):
            if getattr(self, name) is not None:
                _at_least_1(name, getattr(self, name))
        if self.max_duration is not None and self.max_duration <= 0:
            raise CorpusError(f"max_duration must be positive, got {self.max_duration}")
        if self.engine not in ENGINES:
            raise CorpusError(f"unknown engine {self.engine!r}; use 'local' or 'ray'")

    def token_specs(self, codec: CorpusModel) -> tuple[TokenSpec, ...]:
        """The token columns for ``codec`` at this bandwidth or ``n_q`` (checks them, and the layouts)."""
        n_q, _ = resolve_n_q(codec, self.bandwidth, self.n_q)
        if self.tokens and family_name(codec) == "snac":
            raise CorpusError(
                "tokens: the token layouts need one frame rate for all codebooks; SNAC's levels have "
                "several (write the codes, and make Orpheus ids with rvqkit.tokens.families)"
            )
        specs = token_columns(
            self.tokens, n_q, int(codec.config.codebook_size), self.token_offset, self.token_begin,
            self.token_end,
        )  # fmt: skip
        _check_columns(self.codes, specs)
        return tuple(specs)


@dataclass(frozen=True)
class ModelInfo:
    """The model a job encodes with, as ``manifest.json`` records it (sample rate in Hz, frame rate in
    frames per second)."""

    name: str
    weights_sha256: str | None
    sample_rate: int
    channels: int
    frame_rate: float  # EnCodec: an integer; Mimi 12.5
    codebook_size: int
    # Mimi, DAC and SNAC only (None, and left out of the manifest, for EnCodec):
    family: str | None = None  # "mimi", "dac" or "snac"
    num_codebooks: int | None = None  # codebooks (SNAC: levels) the model holds
    hop_length: int | None = None  # samples per (finest) frame
    vq_strides: tuple[int, ...] | None = None  # SNAC: finest frames per frame of each level

    @classmethod
    def of(cls, codec: CorpusModel) -> ModelInfo:
        if isinstance(codec, Codec):
            return cls(
                codec.name,
                codec.weights_sha256,
                codec.sample_rate,
                codec.channels,
                codec.frame_rate,
                codec.codebook_size,
            )
        cfg: Any = codec.config
        family = family_name(codec)
        return cls(
            name=str(getattr(cfg, "name", None) or family),
            weights_sha256=family_weights_sha256(codec),
            sample_rate=codec.sample_rate,
            channels=codec.channels,
            frame_rate=float(codec.frame_rate),
            codebook_size=int(cfg.codebook_size),
            family=family,
            num_codebooks=int(codec.num_codebooks),
            hop_length=int(cfg.hop_length),
            vq_strides=tuple(int(v) for v in cfg.vq_strides) if family == "snac" else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``model``: EnCodec's six keys, and the families' own where set."""
        d = asdict(self)
        if self.vq_strides is not None:
            d["vq_strides"] = list(self.vq_strides)
        return {k: v for k, v in d.items() if v is not None or k == "weights_sha256"}


@dataclass(frozen=True)
class SourceInfo:
    """The job's inputs: kind, location, sha256 of the ordered (id, path) list, carried columns."""

    kind: str
    location: str
    fingerprint: str
    columns: tuple[str, ...] = ()

    @classmethod
    def of(cls, src: Source) -> SourceInfo:
        return cls(src.kind, src.location, src.fingerprint(), tuple(src.extra_columns))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "columns": list(self.columns)}


@dataclass(frozen=True)
class CorpusJob:
    """One job: its settings resolved against the model and the source.

    :meth:`to_manifest` is the job part of ``manifest.json``; :meth:`matches` says whether a re-run may
    resume the job an existing manifest describes."""

    settings: JobSettings
    model: ModelInfo
    model_source: str  # where the weights were loaded from (hub id, absolute path or name)
    n_q: int  # codebooks
    bandwidth: float  # kbps of n_q codebooks
    lstm_batched: bool  # the encoder's LSTM ran batched across items (its arithmetic decides near-ties)
    source: SourceInfo
    num_items: int
    first_shard_size: int  # items of shard 0, at most settings.shard_size
    tokens: tuple[TokenSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        _at_least_1("n_q", self.n_q)
        _at_least_1("first_shard_size", self.first_shard_size)
        if self.first_shard_size > self.settings.shard_size:
            raise CorpusError(
                f"first_shard_size must be at most shard_size ({self.settings.shard_size}), "
                f"got {self.first_shard_size}"
            )
        if self.num_items < 0:
            raise CorpusError(f"num_items must be 0 or more, got {self.num_items}")
        _check_columns(self.settings.codes, self.tokens)

    @classmethod
    def create(
        cls,
        settings: JobSettings,
        codec: CorpusModel,
        model_source: str,
        src: Source,
        tokens: Sequence[TokenSpec],
        old: Mapping[str, Any] | None = None,
    ) -> CorpusJob:
        """The job of ``settings`` with ``codec`` on ``src`` (the items it will encode). ``old`` is the
        manifest of the job being resumed, whose first shard size is kept unless the settings give
        one (older versions had none: their ``shard_size``)."""
        first = settings.first_shard_size
        if first is None:
            first = old.get("first_shard_size", old.get("shard_size")) if old else None
            first = first or DEFAULT_FIRST_SHARD_SIZE
        n_q, bandwidth = resolve_n_q(codec, settings.bandwidth, settings.n_q)
        return cls(
            settings=settings,
            model=ModelInfo.of(codec),
            model_source=model_source,
            n_q=n_q,
            bandwidth=bandwidth,
            # the families have no LSTM: their codes never depend on lstm_batch
            lstm_batched=not is_family(codec) and settings.lstm_batch > 1 and codec.device.type == "cpu",
            source=SourceInfo.of(src),
            num_items=len(src.items),
            first_shard_size=min(first, settings.shard_size),
            tokens=tuple(tokens),
        )

    @property
    def layout(self) -> ShardLayout:
        return ShardLayout(self.num_items, self.settings.shard_size, self.first_shard_size)

    def to_manifest(self) -> dict[str, Any]:
        """The job's keys of ``manifest.json`` (the output folder adds ``status``, ``counts`` ...)."""
        family = {"family": self.model.family} if self.model.family else {}  # EnCodec: no key (as before)
        column = SNAC_CODES_COLUMN if self.model.family == "snac" else CODES_COLUMN
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "rvqkit_version": __version__,
            "model": self.model.to_dict(),
            "model_source": self.model_source,
            **family,
            "bandwidth": self.bandwidth,
            "n_q": self.n_q,
            "lstm_batched": self.lstm_batched,
            "codes": dict(column) if self.settings.codes else None,
            "shard_size": self.settings.shard_size,
            "first_shard_size": self.first_shard_size,
            "num_shards": self.layout.num_shards,
            "num_items": self.num_items,
            "source": self.source.to_dict(),
            "filters": {
                "min_duration": self.settings.min_duration,
                "max_duration": self.settings.max_duration,
            },
            "tokens": [t.describe() for t in self.tokens] or None,
        }

    def matches(self, old: Mapping[str, Any]) -> str | None:
        """None when a re-run of this job may resume the job of manifest ``old``; else why not, as
        ``"a job with other settings (bandwidth differ)"``."""
        # keys of older versions: the LSTM ran as a batch of one; every shard had shard_size items
        old = {"lstm_batched": False, "first_shard_size": old.get("shard_size"), **old}
        new = self.to_manifest()
        diff = [k for k in JOB_KEYS if old.get(k) != new.get(k)]
        if not diff:
            return None
        hint = ""
        if "lstm_batched" in diff:
            hint = f" (it was encoded with lstm_batch={'2 or more' if old['lstm_batched'] else '1'})"
        return f"a job with other settings ({', '.join(diff)} differ){hint}"


def _at_least_1(name: str, value: int) -> None:
    if value < 1:
        raise CorpusError(f"{name} must be at least 1, got {value}")


def _check_columns(codes: bool, tokens: Sequence[TokenSpec]) -> None:
    if not codes and not tokens:
        raise CorpusError("without the codes column, give at least one token layout (tokens)")
