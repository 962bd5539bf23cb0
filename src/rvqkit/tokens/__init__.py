"""RVQ codes as language-model tokens: layouts (flatten, codebook, delay, parallel), vocabularies with
an offset and special tokens, exact round trips, and frame-by-frame emission for streaming."""

from .files import TokenFile, read_tokens, save_tokens
from .patterns import LAYOUTS, TokenBatch, TokenLayout, TokenStreamer
from .vocab import TokenError, Vocab

__all__ = [
    "LAYOUTS",
    "TokenBatch",
    "TokenError",
    "TokenFile",
    "TokenLayout",
    "TokenStreamer",
    "Vocab",
    "read_tokens",
    "save_tokens",
]
