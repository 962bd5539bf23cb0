"""Several codecs side by side in one evaluation: each model's rows (named by the model), the baselines
once per sample rate, and the facts of each model (``info["models"]``), in one :class:`EvalResult` that
:func:`rvqkit.eval.write_report` writes as one report."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .families import check_family_settings, display_name
from .run import EvalError, EvalResult, Example, Progress, _check_settings, run_eval

if TYPE_CHECKING:
    from ..codec import Codec
    from ..family_codec import FamilyCodec


def model_name(codec: Codec | FamilyCodec) -> str:
    """The name a model's rows carry in a comparison: an EnCodec model's config name (e.g.
    ``encodec_24khz``), a Mimi/DAC/SNAC model's source (a local path's last part)."""
    from ..family_codec import FamilyCodec

    return display_name(codec.source) if isinstance(codec, FamilyCodec) else codec.name


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        m, i = n, 2
        while m in out:
            m, i = f"{n}#{i}", i + 1
        out.append(m)
    return out


def check_compare_settings(
    codecs: Sequence[Codec | FamilyCodec],
    names: Sequence[str],
    bandwidths: Sequence[float] | None,
    n_q: Sequence[int] | None,
) -> None:
    """Check every model's settings before any runs: ``bandwidths`` apply to the EnCodec models (an
    :class:`EvalError` if there is none), ``n_q`` to every model; errors name the model."""
    from ..family_codec import FamilyCodec

    if bandwidths is not None and all(isinstance(c, FamilyCodec) for c in codecs):
        raise EvalError(
            "bandwidths= selects EnCodec bandwidths and none of the models is EnCodec; "
            "choose codebook counts with n_q="
        )
    for codec, name in zip(codecs, names, strict=True):
        try:
            if isinstance(codec, FamilyCodec):
                check_family_settings(codec, None, n_q)
            else:
                _check_settings(codec, bandwidths, n_q)
        except EvalError as e:
            raise EvalError(f"{name}: {e}") from e


def compare(
    codecs: Sequence[Codec | FamilyCodec],
    inputs: Iterable[str | os.PathLike[str]] | Mapping[str, tuple[np.ndarray, int]],
    bandwidths: Sequence[float] | None = None,
    n_q: Sequence[int] | None = None,
    *,
    names: Sequence[str] | None = None,
    lm: Sequence[str | os.PathLike[str] | None] | None = None,
    baselines: bool = True,
    progress: Progress | None = None,
    **options: Any,
) -> EvalResult:
    """Evaluate each of ``codecs`` (EnCodec :class:`~rvqkit.Codec` or Mimi/DAC/SNAC
    :class:`~rvqkit.family_codec.FamilyCodec`) on the same ``inputs``, in one result.

    Args:
        codecs: the models, in the order the report lists them.
        inputs: as :func:`rvqkit.eval.evaluate`'s.
        bandwidths: kbps for the EnCodec models (default all of each); Mimi/DAC/SNAC rows are codebook
            counts.
        n_q: codebook counts for every model (EnCodec: first k at the top bandwidth; SNAC: first k
            levels); each must be within every model's codebooks.
        names: what each model's rows are called (default :func:`model_name`, made unique).
        lm: one entropy-coding LM checkpoint (or None) per model; only EnCodec models use one.
        baselines: Opus/MP3 baselines, run once per distinct sample rate (with the first model of that
            rate); their labels add the rate (``"opus 6 kbps @ 16 kHz"``) when the models' rates differ.
        progress: ``callback(done, total)``, over each model's items x settings in turn.
        **options: the rest of :func:`rvqkit.eval.evaluate`'s options (``metrics``, ``workers``,
            ``examples``, ``lm_items``, ``max_delay_s``).

    Returns:
        :class:`EvalResult` whose rows carry ``model`` (the name) and labels starting with it
        (``"mimi_hf k=2"``, ``"encodec_24khz 6 kbps"``); ``info["models"]`` holds each model's facts
        (as a single-model run's ``info``, with ``name``), the top level the shared ones.
    """
    from ..family_codec import FamilyCodec

    if not codecs:
        raise EvalError("no models to evaluate")
    labels = _unique(list(names) if names is not None else [model_name(c) for c in codecs])
    if len(labels) != len(codecs):
        raise EvalError(f"names= gives {len(labels)} names for {len(codecs)} models")
    lms = list(lm) if lm is not None else [None] * len(codecs)
    if len(lms) != len(codecs):
        raise EvalError(f"lm= gives {len(lms)} checkpoints for {len(codecs)} models")
    check_compare_settings(codecs, labels, bandwidths, n_q)
    rates = {(c.sample_rate, c.channels) for c in codecs}
    seen: set[tuple[int, int]] = set()
    results: list[EvalResult] = []
    offset = 0
    for codec, label, lm_path in zip(codecs, labels, lms, strict=True):
        family = isinstance(codec, FamilyCodec)
        key = (codec.sample_rate, codec.channels)
        with_baselines = baselines and key not in seen
        seen.add(key)

        last = [0]

        def step(done: int, total: int, offset: int = offset, last: list[int] = last) -> None:
            last[0] = total
            if progress is not None:
                progress(offset + done, offset + total)

        res = run_eval(
            codec, inputs, None if family else bandwidths, n_q, baselines=with_baselines,
            lm=None if family else lm_path, progress=step, name=label, **options,
        )  # fmt: skip
        offset += last[0]
        at = f" @ {codec.sample_rate / 1000:g} kHz" if len(rates) > 1 else ""
        for r in res.rows:
            r["model"] = label
            if r["setting"] == "baseline":
                r["label"] += at
        for ex in res.examples:
            ex.reconstructions = {
                (k if k.startswith(label) else k + at): v for k, v in ex.reconstructions.items()
            }
        if not with_baselines and baselines:
            res.info["baselines"] = {"used": [], "missing": {}, "shared": "run with an earlier model"}
        for b in res.info["baselines"]["used"]:
            b["label"] += at
        missing = res.info["baselines"]["missing"]
        res.info["baselines"]["missing"] = {(k if k == "all" else k + at): v for k, v in missing.items()}
        res.info["name"] = label
        results.append(res)
    return EvalResult(_rows(results), _info(results), _examples(results))


def _rows(results: list[EvalResult]) -> list[dict[str, Any]]:
    order: dict[str, int] = {}
    for res in results:
        for r in res.rows:
            order.setdefault(r["item"], len(order))
    rows = [r for res in results for r in res.rows]
    model_index = {res.info["name"]: i for i, res in enumerate(results)}
    # per item: each model's rows in the order given, then the baselines
    rows.sort(key=lambda r: (order[r["item"]], r["codec"] != "rvqkit", model_index[r["model"]]))
    return rows


def _info(results: list[EvalResult]) -> dict[str, Any]:
    first = results[0].info
    skipped: dict[str, dict[str, str]] = {}
    for res in results:
        for s in res.info["skipped_items"]:
            skipped.setdefault(s["item"], s)
    missing: dict[str, str] = {}
    for res in results:
        missing.update(res.info["baselines"]["missing"])
    used = [b for res in results for b in res.info["baselines"]["used"]]
    if used:
        missing.pop("all", None)
    timing = {
        "total_s": sum(r.info["timing"]["total_s"] for r in results),
        "model_s": sum(r.info["timing"]["model_s"] for r in results),
        "workers": first["timing"]["workers"],
    }
    notes = "; ".join(f"{r.info['name']}: {r.info['entropy_coding']['note']}" for r in results)
    return {
        "model": " vs ".join(r.info["name"] for r in results),
        "models": [r.info for r in results],
        "sample_rate": first["sample_rate"],
        "channels": first["channels"],
        "items": first["items"],
        "items_scored": min(r.info["items_scored"] for r in results),
        "seconds": first["seconds"],
        "skipped_items": list(skipped.values()),
        "metrics": first["metrics"],
        "metric_units": first["metric_units"],
        "baselines": {"used": used, "missing": missing},
        "entropy_coding": {
            "lm": [r.info["entropy_coding"]["lm"] for r in results],
            "items": max(r.info["entropy_coding"]["items"] for r in results),
            "note": notes,
        },
        "max_delay_samples": first["max_delay_samples"],
        "timing": timing,
    }


def _examples(results: list[EvalResult]) -> list[Example]:
    """The first model's examples, with every other model's reconstructions of the same items (at their
    own rates)."""
    kept = results[0].examples
    by_item = {ex.item: ex for ex in kept}
    sr = results[0].info["sample_rate"]
    for ex in kept:
        ex.rates.update(dict.fromkeys(ex.reconstructions, sr))
    for res in results[1:]:
        rate = res.info["sample_rate"]
        for ex in res.examples:
            target = by_item.get(ex.item)
            if target is None:
                continue
            for label, audio in ex.reconstructions.items():
                target.reconstructions[label] = audio
                target.rates[label] = rate
    return kept
