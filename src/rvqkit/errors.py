"""The one error family rvqkit raises for bad input; the CLI turns it into one line and exit 1."""

from __future__ import annotations


class RvqkitError(Exception):
    """Base class of every error rvqkit reports about the user's input, files or weights."""


class AudioError(RvqkitError):
    """Audio that cannot be used: unreadable, empty, NaN/Inf, wrong shape or dtype."""


class BandwidthError(RvqkitError):
    """A bandwidth (kbps) or codebook count the model does not have."""


class WeightsError(RvqkitError):
    """Weights that cannot be found, fail their checksum, or do not fit the model."""


class CodesError(RvqkitError):
    """An encoded value or codes file that is malformed or made by another model."""
