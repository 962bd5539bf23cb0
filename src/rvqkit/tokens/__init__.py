"""RVQ codes as language-model tokens: layouts (flatten, codebook, delay, parallel), vocabularies with
an offset and special tokens, exact round trips, and frame-by-frame emission for streaming."""

from .patterns import LAYOUTS, TokenBatch, TokenLayout, TokenStreamer
from .vocab import TokenError, Vocab

__all__ = ["LAYOUTS", "TokenBatch", "TokenError", "TokenLayout", "TokenStreamer", "Vocab"]
