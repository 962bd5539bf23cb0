"""Meta's ``.ecdc`` compressed-audio format, as a pure format: it knows neither the network nor the LM's
weights (the LM comes in as a :class:`Predictor`).

- :mod:`.header`: magic, version, the JSON metadata (:class:`EcdcHeader`, checked when made);
- :mod:`.ecdc`: segment framing, :class:`EcdcWriter` / :class:`EcdcReader` (frame by frame),
  :func:`write_ecdc` / :func:`read_ecdc` (whole :class:`~rvqkit.Encoded` values), :func:`follow_ecdc`;
- :mod:`.bitpack`: bit I/O (10-bit packing, :class:`~.bitpack.BitReader`); :mod:`.arith`: the quantized
  CDFs and the arithmetic coder.

Audio in and out (codec + LM + container) is :mod:`rvqkit.compress`; its functions are also reachable
here under their old names (``rvqkit.bitstream.compress`` ...), imported when first used.
"""

from __future__ import annotations

from typing import Any

from .ecdc import (
    EcdcReader,
    EcdcWriter,
    FrameChunk,
    encoded_from_chunks,
    follow_ecdc,
    iter_chunks,
    read_ecdc,
    read_header,
    write_ecdc,
)
from .header import MAGIC, BitstreamError, EcdcHeader
from .predictor import Predictor

_IN_COMPRESS = (
    "compress",
    "compress_file",
    "compress_to_file",
    "decompress",
    "decompress_file",
    "resolve_lm",
)

__all__ = [
    "MAGIC",
    "BitstreamError",
    "EcdcHeader",
    "EcdcReader",
    "EcdcWriter",
    "FrameChunk",
    "Predictor",
    "encoded_from_chunks",
    "follow_ecdc",
    "iter_chunks",
    "read_ecdc",
    "read_header",
    "write_ecdc",
]


def __getattr__(name: str) -> Any:
    """The audio-level functions that lived here before :mod:`rvqkit.compress` (imported on first use,
    so that importing the format does not import the model)."""
    if name in _IN_COMPRESS:
        from .. import compress

        return getattr(compress, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
