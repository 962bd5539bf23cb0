"""Stand-in for torchaudio so that Meta's encodec package imports in tests (only import-time names)."""

from . import functional, transforms  # noqa: F401
