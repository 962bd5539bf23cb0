"""Residual vector quantization."""

from .rvq import ResidualVectorQuantizer

__all__ = ["ResidualVectorQuantizer"]
