"""DAC (Descript Audio Codec): rvqkit's own PyTorch implementation, exact against its references.

44.1 kHz (8 and 16 kbps), 24 kHz and 16 kHz models; Snake activations, factorized L2-normalized
codebooks. Not causal: no streaming; long signals run in overlapping windows (:mod:`.chunked`).
"""

from .chunked import decode_chunked, encode_chunked, encode_like_dac_compress
from .config import DAC_16KHZ, DAC_24KHZ, DAC_44KHZ, DAC_44KHZ_16KBPS, PRESETS, DacConfig
from .loading import (
    load_dac,
    load_dac_hf,
    load_dac_pth,
    looks_like_dac,
    random_dac,
    save_dac_hf,
    save_dac_pth,
)
from .model import DacModel

__all__ = [
    "DAC_16KHZ",
    "DAC_24KHZ",
    "DAC_44KHZ",
    "DAC_44KHZ_16KBPS",
    "PRESETS",
    "DacConfig",
    "DacModel",
    "decode_chunked",
    "encode_chunked",
    "encode_like_dac_compress",
    "load_dac",
    "load_dac_hf",
    "load_dac_pth",
    "looks_like_dac",
    "random_dac",
    "save_dac_hf",
    "save_dac_pth",
]
