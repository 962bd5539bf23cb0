"""The ``.ecdc`` header: magic, version and the JSON metadata, checked whether it comes from a file or
from a writer's arguments.

Layout (what Meta's ``encodec`` tool reads and writes)::

    "ECDC"  uint8 version (0)  uint32 big-endian n  n bytes of UTF-8 JSON {"m", "al", "nc", "lm"}

``m`` is the model name, ``al`` the audio length in samples at the model rate, ``nc`` the number of
codebooks, ``lm`` whether the codes are entropy-coded. The segment framing that follows from ``al`` comes
from the model's configuration (:mod:`rvqkit.framing`), never from the network.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

from ..config import PRESETS, CodecConfig
from ..errors import CodesError
from ..framing import segment_bounds

MAGIC = b"ECDC"
VERSION = 0
PREFIX = struct.Struct("!4sBI")  # magic, version, JSON length
MAX_META_BYTES = 1 << 16  # Meta's metadata is ~60 bytes; anything near this is not an .ecdc file
MAX_SECONDS = 24 * 3600  # longest audio a header may declare
LIVE_LENGTH_WIDTH = 20  # characters reserved for "al" in a live file's header, patched at close


class BitstreamError(CodesError):
    """An ``.ecdc`` file or stream that is malformed, truncated, or cannot be used with this model."""


@dataclass(frozen=True)
class EcdcHeader:
    """The metadata of an ``.ecdc`` file, checked when made: a known model, a length of at most 24 hours,
    a codebook count the model has. Every problem is a :class:`BitstreamError`.

    Attributes:
        model: model name (``encodec_24khz`` / ``encodec_48khz``).
        audio_length: samples at the model rate; 0 in a live file whose writer has not finished.
        n_q: codebooks per frame.
        use_lm: whether the codes are arithmetic-coded with the LM.
    """

    model: str
    audio_length: int
    n_q: int
    use_lm: bool

    def __post_init__(self) -> None:
        model, al, nc = self.model, self.audio_length, self.n_q
        if not isinstance(model, str) or model not in PRESETS:
            raise BitstreamError(
                f".ecdc file made by an unknown model {model!r} (known: {', '.join(PRESETS)})"
            )
        cfg = PRESETS[model]
        if type(al) is not int or not 0 <= al <= MAX_SECONDS * cfg.sampling_rate:
            raise BitstreamError(f"corrupt .ecdc metadata: audio length {al!r} samples is absurd")
        if type(nc) is not int or not 1 <= nc <= cfg.num_codebooks:
            raise BitstreamError(
                f"corrupt .ecdc metadata: {nc!r} codebooks (the {model} model has 1..{cfg.num_codebooks})"
            )
        if type(self.use_lm) is not bool:
            raise BitstreamError(f'corrupt .ecdc metadata: "lm" must be true or false, got {self.use_lm!r}')

    @property
    def config(self) -> CodecConfig:
        return PRESETS[self.model]

    @property
    def live(self) -> bool:
        return self.audio_length == 0

    def segment_frames(self) -> list[int]:
        """Code frames in each segment (empty while the length is unknown)."""
        if self.live:
            return []
        hop = self.config.hop_length
        return [math.ceil((e - s) / hop) for s, e in segment_bounds(self.config, self.audio_length)]

    def to_bytes(self, live: bool = False) -> bytes:
        """The header bytes, JSON exactly as Meta's tool writes it; ``live`` reserves room to patch ``al``."""
        meta = {"m": self.model, "al": self.audio_length, "nc": self.n_q, "lm": self.use_lm}
        if live:  # a fixed-width number (JSON allows the spaces), so that close() can patch it in place
            meta["al"] = 0
            al = str(self.audio_length).ljust(LIVE_LENGTH_WIDTH)
            text = json.dumps(meta).replace('"al": 0,', f'"al": {al},', 1)
        else:
            text = json.dumps(meta)
        raw = text.encode("utf-8")
        return PREFIX.pack(MAGIC, VERSION, len(raw)) + raw

    @classmethod
    def parse_prefix(cls, data: bytes) -> int:
        """Check magic and version of the first 9 bytes; return the JSON length."""
        magic, version, size = PREFIX.unpack(data)
        if magic != MAGIC:
            raise BitstreamError("not an .ecdc file (the magic bytes are not ECDC)")
        if version != VERSION:
            raise BitstreamError(f".ecdc version {version} is not supported (only version {VERSION})")
        if size > MAX_META_BYTES:
            raise BitstreamError(f"corrupt .ecdc header: metadata length {size} bytes is absurd")
        return int(size)

    @classmethod
    def parse_meta(cls, raw: bytes) -> EcdcHeader:
        """The header of the JSON metadata bytes of a file (checked as any header is)."""
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise BitstreamError(f"corrupt .ecdc metadata (not JSON: {e})") from e
        if not isinstance(meta, dict) or not {"m", "al", "nc", "lm"} <= meta.keys():
            raise BitstreamError('corrupt .ecdc metadata (expected the keys "m", "al", "nc", "lm")')
        return cls(meta["m"], meta["al"], meta["nc"], meta["lm"])
