"""SNAC (Multi-Scale Neural Audio Codec, hubertsiuzdak/snac): rvqkit's own PyTorch implementation.

Codes are a list of ``[B, frames_i]`` int64 tensors, coarsest level first, as the snac package returns
them. See docs/snac.md for padding, batching, chunked long files, the decoder's noise and token layouts.
"""

from .config import HUB_IDS, PRESETS, SnacConfig
from .loading import load_snac, looks_like_snac, random_snac, save_snac, snac_state_dict
from .model import SnacModel

__all__ = [
    "HUB_IDS",
    "PRESETS",
    "SnacConfig",
    "SnacModel",
    "load_snac",
    "looks_like_snac",
    "random_snac",
    "save_snac",
    "snac_state_dict",
]
