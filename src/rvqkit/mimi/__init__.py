"""Mimi (Kyutai's 24 kHz, 12.5 Hz streaming codec) in rvqkit's own PyTorch, exact against transformers.

See docs/mimi.md. Public API: :class:`MimiConfig`, :class:`MimiModel` (``encode``, ``decode``,
``frames_for_length``, ``init_state``, ``encode_step``, ``decode_step``), :func:`load_mimi`,
:func:`looks_like_mimi`, :func:`random_mimi`, :func:`save_hf_folder`, :func:`save_moshi_file`.
"""

from .config import KYUTAI_MIMI, MimiConfig
from .loading import LoadedMimi, load_mimi, looks_like_mimi, save_hf_folder, save_moshi_file
from .model import MimiModel, MimiState
from .random_weights import random_mimi

__all__ = [
    "KYUTAI_MIMI",
    "LoadedMimi",
    "MimiConfig",
    "MimiModel",
    "MimiState",
    "load_mimi",
    "looks_like_mimi",
    "random_mimi",
    "save_hf_folder",
    "save_moshi_file",
]
