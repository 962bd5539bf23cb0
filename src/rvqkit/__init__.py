"""rvqkit: neural audio compression with residual vector quantization (EnCodec), exact and streamable."""

from . import runtime  # noqa: F401  first: sets OpenMP's wait policy before torch loads (rvqkit.runtime)
from .codec import Codec
from .config import ENCODEC_24KHZ, ENCODEC_48KHZ, CodecConfig
from .encoded import Encoded
from .errors import AudioError, BandwidthError, CodesError, RvqkitError, WeightsError
from .families import detect_family, load_family_model
from .runtime import tune_allocator
from .stream import CodePacket, StreamDecoder, StreamEncoder, StreamError
from .tokens import TokenError, TokenLayout

__version__ = "0.1.0"

__all__ = [
    "Codec",
    "CodecConfig",
    "ENCODEC_24KHZ",
    "ENCODEC_48KHZ",
    "Encoded",
    "RvqkitError",
    "AudioError",
    "BandwidthError",
    "CodesError",
    "WeightsError",
    "CodePacket",
    "StreamEncoder",
    "StreamDecoder",
    "StreamError",
    "TokenLayout",
    "TokenError",
    "tune_allocator",
    "detect_family",
    "load_family_model",
    "__version__",
]
