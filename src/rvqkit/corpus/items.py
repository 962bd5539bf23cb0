"""What flows through a corpus job: input items, their loaded audio, and per-item results.

Kept free of torch, pyarrow and datasets so that worker processes and Ray tasks import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import RvqkitError

# Why an item has no row; the ``reason`` field of ``errors.jsonl``. The first five come from decoding
# the audio; ``special_file``, ``broken_link`` and ``unreadable_folder`` from listing a folder (such
# entries are never opened); ``vanished`` and ``changed`` from a file that is gone or differs (size or
# modification time) from when the job listed it.
REASONS = (
    "unreadable",
    "empty",
    "nan",
    "too_short",
    "too_long",
    "encode_failed",
    "special_file",
    "broken_link",
    "unreadable_folder",
    "vanished",
    "changed",
)
EXTRA_COLUMNS = ("text", "speaker")  # carried from a manifest or dataset into the output when present


class CorpusError(RvqkitError):
    """A corpus source, output folder or option that cannot be used."""


@dataclass(frozen=True)
class Item:
    """One input of a corpus job.

    Attributes:
        index: position in the source's (deterministic) order; shard ``k`` holds indices
            ``[k * shard_size, (k + 1) * shard_size)``.
        id: unique name of the item (``id`` column, else the file path relative to the source).
        path: where the audio comes from (file path, or ``dataset[row]`` for a datasets source).
        extra: carried columns (``text``, ``speaker``) as ``(name, value)`` pairs.
        stat: ``(size in bytes, modification time in ns)`` of the file when the job listed it (files
            of folder and manifest sources); a file that differs when it is read is not encoded.
        error: ``(reason, message)`` for an entry found unusable while listing (a FIFO, a dangling
            link, an unreadable folder ...): it is never opened and goes to ``errors.jsonl``.
    """

    index: int
    id: str
    path: str
    extra: tuple[tuple[str, str | None], ...] = ()
    stat: tuple[int, int] | None = None
    error: tuple[str, str] | None = None


@dataclass
class Loaded:
    """An item's audio after decoding, or the reason it cannot be used.

    ``audio`` is float32 ``[model channels, samples]`` at the model's sample rate; ``sample_rate``,
    ``channels`` and ``num_samples`` describe the original file (Hz, count, samples).
    """

    index: int
    audio: np.ndarray | None = None
    sample_rate: int = 0
    channels: int = 0
    num_samples: int = 0
    reason: str | None = None
    message: str | None = None

    @property
    def duration(self) -> float:
        """Original duration in seconds."""
        return self.num_samples / self.sample_rate if self.sample_rate else 0.0


#: One item's codes: int16 ``[n_q, frames]`` (EnCodec, Mimi, DAC), or for SNAC a list of int16
#: ``[frames_i]`` arrays, one per level, coarsest first.
ItemCodes = np.ndarray | list[np.ndarray]


def code_frames(codes: ItemCodes) -> int:
    """Frames of one item's codes: the finest level's for SNAC (its last)."""
    return int(codes[-1].shape[-1]) if isinstance(codes, list) else int(codes.shape[-1])


@dataclass
class Result:
    """Codes of one item (``codes``: see :data:`ItemCodes`; ``scales`` float32 ``[segments]`` at 48 kHz)
    or its error (``reason``, ``message``)."""

    index: int
    sample_rate: int = 0
    channels: int = 0
    num_samples: int = 0
    codes: ItemCodes | None = None
    scales: np.ndarray | None = None
    reason: str | None = None
    message: str | None = None
    model_samples: int = 0  # length at the model's rate, samples
    tokens: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate if self.sample_rate else 0.0
