"""``rvqkit eval``: objective quality of the codec per bandwidth and per codebook count, on the user's
audio, against Opus and MP3 at the same bitrates (see docs/eval.md). EnCodec models are scored per
bandwidth and per first-k codebook count; Mimi, DAC and SNAC models per codebook count (SNAC: first k
levels, :mod:`rvqkit.eval.families`).

- :func:`evaluate`: one row per item and setting, as a pandas DataFrame (facts of the run in
  ``df.attrs["eval"]``);
- :func:`compare`: several models on the same inputs in one result (one report, each row naming its
  model);
- :func:`summarize`: mean, median and 10th percentile of each metric per codec, bandwidth and k;
- :func:`write_report`: ``report.md``, ``report.json``, ``items.csv``, plots and ``index.html``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .metrics import METRICS, MetricSkipped

if TYPE_CHECKING:
    import pandas as pd

    from ..codec import Codec
    from ..family_codec import FamilyCodec
    from .comparison import compare
    from .report import summarize, summary_rows, write_report
    from .run import EvalError, EvalResult, run_eval

# The report and the runner (which import the corpus reader, and with it pyarrow) load when first used:
# the metrics alone (rvqkit.eval.metrics, rvqkit.eval.streaming, e.g. in the server) need neither.
_LAZY = {
    "compare": "comparison",
    "summarize": "report",
    "summary_rows": "report",
    "write_report": "report",
    "EvalError": "run",
    "EvalResult": "run",
    "run_eval": "run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRICS",
    "EvalError",
    "EvalResult",
    "MetricSkipped",
    "compare",
    "evaluate",
    "run_eval",
    "summarize",
    "summary_rows",
    "write_report",
]


def evaluate(
    codec: Codec | FamilyCodec,
    inputs: Iterable[str | os.PathLike[str]] | Mapping[str, tuple[np.ndarray, int]],
    bandwidths: Sequence[float] | None = None,
    n_q: Sequence[int] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Score ``codec`` on ``inputs`` at each bandwidth and each first-k codebook count, and the baselines.

    Args:
        codec: the model: EnCodec's :class:`~rvqkit.Codec`, or a Mimi, DAC or SNAC model from
            :func:`rvqkit.families.load_family_model` (rows per codebook count only: ``bandwidths`` and
            ``lm`` are EnCodec's and refused).
        inputs: audio files, folders or manifests (listed as ``rvqkit corpus`` does), or
            ``{id: (audio, sample_rate)}`` with audio ``[samples]`` or ``[channels, samples]``.
        bandwidths: kbps to evaluate (default: all the model's).
        n_q: first-k codebook counts to decode at the top bandwidth (default 1..its n_q); Mimi/DAC: the
            first k codebooks, SNAC: the first k levels, coarsest first (default 1..``num_codebooks``).
        **options: ``baselines`` (bool, default True), ``metrics`` (names, default all of
            :data:`METRICS`), ``lm`` (entropy-coding LM checkpoint: real bitrates), ``lm_items``
            (items LM-coded, default 3), ``workers`` (metric processes, default 2; 0: in this process),
            ``examples`` (items whose audio is kept, default 0), ``max_delay_s`` (delay search range
            for the aligned metrics, default 0.05 s), ``progress`` (``callback(done, total)`` over
            items x settings), ``name`` (what the model's row labels start with: default ``"rvqkit"``,
            or the family, e.g. ``"mimi k=2"``).

    Returns:
        pandas DataFrame, one row per item and setting (``codec``, ``setting``: ``bandwidth``, ``k`` or
        ``baseline``, ``label``, ``n_q``, ``kbps``: nominal (Mimi/DAC: ``n_q * log2(codebook_size) *
        frame_rate / 1000``), ``real_kbps``, the metrics, the aligned
        metrics, ``delay_samples``, ``skipped``: reasons); ``df.attrs["eval"]`` holds the run's facts.
    """
    import pandas as pd

    from .run import run_eval

    result = run_eval(codec, inputs, bandwidths, n_q, **options)
    df = pd.DataFrame(result.rows)
    df.attrs["eval"] = result.info
    return df
