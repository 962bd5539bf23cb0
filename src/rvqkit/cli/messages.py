"""The library's error messages in the command line's terms.

rvqkit's library errors name the Python parameter that fixes them (``overwrite=True``, ``lm=PATH``,
``shard_size must ...``), since a library user has no flags; :func:`cli_message` rewrites those names as
the flags of the command that was run. The table is here, beside the commands, so no library module
knows a flag."""

from __future__ import annotations

import re

# parameter -> flag, where the flag is not the parameter's name with dashes
RENAMED = {"lm": "--lm-model", "bandwidths": "--bandwidth"}

# the parameters the commands expose under their own names (``shard_size`` -> ``--shard-size``)
PARAMS = [
    "shard_size",
    "first_shard_size",
    "window",
    "lstm_batch",
    "threads",
    "workers",
    "max_duration",
    "min_duration",
    "batch_seconds",
    "overwrite",
    "audio_column",
    "split",
    "tokens",
    "model",
    "limit",
    "engine",
    "n_q",
    "bandwidth",
    *RENAMED,
]
_NAMES = "|".join(sorted(PARAMS, key=len, reverse=True))


def flag(name: str) -> str:
    """The command-line flag of the library parameter ``name``."""
    return RENAMED.get(name, "--" + name.replace("_", "-"))


def cli_message(message: str) -> str:
    """``message`` with parameter names as flags: ``overwrite=True`` -> ``--overwrite``, ``split=...`` ->
    ``--split ...``, ``lm=PATH`` -> ``--lm-model PATH``, ``shard_size must`` -> ``--shard-size must``,
    ``(tokens)`` -> ``(--tokens)``."""
    message = re.sub(rf"\b({_NAMES})=True\b", lambda m: flag(m[1]), message)
    message = re.sub(rf"\b({_NAMES})=(?=[\s),;]|$)", lambda m: flag(m[1]), message)  # "n_q= (1 to 8)"
    message = re.sub(rf"\b({_NAMES})=", lambda m: flag(m[1]) + " ", message)
    message = re.sub(rf"(^|; |: )({_NAMES}) must\b", lambda m: m[1] + flag(m[2]) + " must", message)
    return re.sub(rf"\(({_NAMES})\)", lambda m: f"({flag(m[1])})", message)
