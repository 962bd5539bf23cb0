"""Evaluate a Mimi, DAC or SNAC model (:class:`rvqkit.family_codec.FamilyCodec`): one row per item and
codebook count, scored as EnCodec's rows are.

The rows are codebook counts (``setting`` = ``k``): ``n_q`` = 1 .. the model's codebooks, or the caller's
selection. Each item is encoded once with the most codebooks asked for, and every count k is a decode of
the first k codebooks of those codes (residual quantization is greedy: the codes of k codebooks are the
first k of any larger count's; the tests check it against ``encode(n_q=k)``). For SNAC the codebooks are
its levels, coarsest first: k = 1 decodes the coarsest level alone, k = 2 the two coarsest, and so on,
exactly what ``rvqkit decode --n-q k`` does with a SNAC codes file.

The nominal bitrate of k codebooks is ``k * log2(codebook_size) * frame_rate / 1000`` kbps (SNAC: the
first k levels' frame rates summed, :func:`rvqkit.family_codes.family_bandwidths`). These families have
no ``.ecdc`` format and no entropy-coding LM, so ``real_kbps`` is that bitrate (codes packed at
``log2(codebook_size)`` bits each) and ``ecdc_kbps`` / ``ecdc_lm_kbps`` are empty.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..corpus.items import Item
from ..corpus.loading import LoadSpec, load_item
from ..corpus.sources import Source
from ..errors import RvqkitError
from ..lm import torch_threads
from . import baselines as bl
from . import metrics as M
from .run import (
    DEFAULT_MAX_DELAY_S,
    ITEM_BATCH,
    EvalError,
    EvalResult,
    Example,
    Progress,
    _baseline_job,
    _init_worker,
    _Inline,
    _score_job,
    _tokens_per_second,
    codebook_usage_counts,
    list_inputs,
    model_threads,
)

if TYPE_CHECKING:
    from ..family_codec import FamilyCodec

NAMES = {"mimi": "Mimi", "dac": "DAC", "snac": "SNAC"}


def family_kbps(codec: FamilyCodec) -> list[float]:
    """Nominal kbps of 1, 2, ... ``num_codebooks`` codebooks (SNAC: levels, coarsest first)."""
    from ..family_codes import family_bandwidths

    return family_bandwidths(codec)


def unit(codec: FamilyCodec) -> str:
    """What the model's codebooks are called: ``"levels"`` for SNAC, else ``"codebooks"``."""
    return "levels" if codec.family == "snac" else "codebooks"


def check_family_settings(
    codec: FamilyCodec, bandwidths: Sequence[float] | None, n_q: Sequence[int] | None, lm: object = None
) -> list[int]:
    """The sorted codebook counts to evaluate (default 1 .. ``num_codebooks``); :class:`EvalError` for
    bandwidths or an LM (EnCodec's settings) and for counts outside 1 .. ``num_codebooks``."""
    name = NAMES.get(codec.family, codec.family)
    if bandwidths is not None:
        raise EvalError(
            f"bandwidths= selects EnCodec bandwidths; {codec.source} is a {name} model: its rows are "
            f"codebook counts, chosen with n_q=K (1 to {codec.num_codebooks})"
        )
    if lm is not None:
        raise EvalError(f"lm= (entropy coding) applies to EnCodec models; {codec.source} is a {name} model")
    top = codec.num_codebooks
    ks = list(range(1, top + 1)) if n_q is None else sorted({int(k) for k in n_q})
    if not ks:
        raise EvalError("n_q is empty")
    bad = [k for k in ks if not 1 <= k <= top]
    if bad:
        raise EvalError(
            f"n_q must be {unit(codec)[:-1]} counts in [1, {top}] ({codec.source} has {top} {unit(codec)}), "
            f"got {bad}"
        )
    return ks


def _first(codes: Any, k: int) -> Any:
    """The first ``k`` codebooks of one item's codes (a ``[n_q, frames]`` tensor, or SNAC's level list)."""
    return list(codes[:k]) if isinstance(codes, list) else codes[:k]


def _tokens(codec: FamilyCodec, codes: Any, k: int, seconds: float) -> dict[str, float]:
    """Codes per second of audio for the first ``k`` codebooks and, where the one-rate token layouts
    apply (Mimi, DAC), the LM sequence positions per second of each layout."""
    if isinstance(codes, list):  # SNAC: levels at different frame rates; the layouts do not apply
        n = sum(int(c.shape[-1]) for c in codes[:k])
        nan = math.nan
        return {"steps_per_s_flatten": nan, "steps_per_s_delay": nan, "steps_per_s_parallel": nan,
                "tokens_per_s": n / seconds}  # fmt: skip
    frames = int(codes.shape[-1])
    return {**_tokens_per_second(k, frames, seconds), "tokens_per_s": k * frames / seconds}


def run_family_eval(
    codec: FamilyCodec,
    inputs: Iterable[str | os.PathLike[str]] | Mapping[str, tuple[np.ndarray, int]],
    bandwidths: Sequence[float] | None = None,
    n_q: Sequence[int] | None = None,
    *,
    baselines: bool = True,
    metrics: Sequence[str] | None = None,
    lm: str | os.PathLike[str] | None = None,
    lm_items: int = 0,
    workers: int = 2,
    examples: int = 0,
    max_delay_s: float = DEFAULT_MAX_DELAY_S,
    progress: Progress | None = None,
    name: str | None = None,
) -> EvalResult:
    """Evaluate a Mimi, DAC or SNAC ``codec`` on ``inputs`` at each codebook count ``n_q`` (default 1 ..
    ``num_codebooks``; SNAC: the first k levels, coarsest first), and the baselines.

    The arguments are :func:`rvqkit.eval.run.run_eval`'s; ``bandwidths`` and ``lm`` are EnCodec's and
    refused (``lm_items`` is ignored). ``name`` starts the rows' labels (default: the family, e.g.
    ``"mimi k=2"``). Items are brought to the model's rate and channels as
    :meth:`FamilyCodec.encode` brings them (soxr), and the metrics compare at that rate, as EnCodec's do.
    """
    del lm_items  # EnCodec's LM entropy coding: no such format for these families
    t_start = time.perf_counter()
    ks = check_family_settings(codec, bandwidths, n_q, lm)
    prefix = name or codec.family
    wanted = tuple(M.METRICS if metrics is None else metrics)
    unknown = [m for m in wanted if m not in M.METRICS]
    if unknown:
        raise EvalError(f"unknown metrics {unknown}; choose from {', '.join(M.METRICS)}")
    metric_status = {m: "ok" if M.available(m) else M.why_unavailable(m) for m in wanted}
    runnable = tuple(m for m in wanted if M.available(m))
    sr, ch = codec.sample_rate, codec.channels
    top = ks[-1]
    all_kbps = family_kbps(codec)
    kbps = {k: all_kbps[k - 1] for k in ks}
    plan, missing = (
        bl.plan(sorted(kbps.values()), sr, ch) if baselines else ([], {"all": "baselines turned off"})
    )
    max_lag = int(round(max_delay_s * sr))
    per_item = len(ks) + len(plan)
    size = int(codec.config.codebook_size)

    if isinstance(inputs, Mapping):
        listed: list[tuple[Source | None, Item]] = [(None, Item(i, str(k), "")) for i, k in enumerate(inputs)]
        arrays = dict(inputs)
    else:
        listed, arrays = list_inputs(inputs), {}
    total = len(listed) * per_item
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    rows: list[dict[str, Any]] = []
    skipped_items: list[dict[str, str]] = []
    kept: list[Example] = []
    counts = torch.zeros(top, size, dtype=torch.long)
    spec = LoadSpec(sr, ch)
    model_s = 0.0

    pool: Any
    if workers > 0:
        pool = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(os.getpid(),)
        )
    else:
        pool = _Inline()
    pending: dict[Future, Callable[[Any], None]] = {}
    max_pending = max(4, 4 * workers)

    def collect(limit: int) -> None:
        while pending and len(pending) > limit:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for f in finished:
                try:
                    value = f.result()
                except BrokenProcessPool as e:
                    raise EvalError(
                        "a metric worker process died (out of memory? or, from a script, the pool needs "
                        "the main module guarded by `if __name__ == '__main__':`; workers=0 runs in-process)"
                    ) from e
                pending.pop(f)(value)

    def submit(fn: Callable, args: tuple, then: Callable[[Any], None]) -> None:
        pending[pool.submit(fn, *args)] = then
        collect(max_pending)

    def load(i: int) -> tuple[str, np.ndarray | None, str | None]:
        src, it = listed[i]
        if it.id in arrays:
            a, a_sr = arrays[it.id]
            try:
                return it.id, codec.prepare(a, a_sr)[0].numpy(), None
            except RvqkitError as e:
                return it.id, None, str(e)
        payload = it.path if src is None else src.payload(it)
        got = load_item(i, payload, spec)
        return it.id, got.audio, None if got.reason is None else f"{got.reason}: {got.message}"

    def item_rows(item_id: str, audio: np.ndarray, codes: Any) -> None:
        nonlocal model_s
        keep = len(kept) < examples
        example = Example(item_id, audio) if keep else None
        if example is not None:
            kept.append(example)
        seconds = audio.shape[-1] / sr
        for q in range(top):
            counts[q] += torch.bincount(codes[q].reshape(-1), minlength=size)
        base = {"item": item_id, "seconds": seconds}
        for b in plan:

            def got_baseline(res, b=b, base=base, example=example) -> None:
                scores, real, est = res
                rows.append(
                    {**base, "codec": b.codec, "setting": "baseline", "label": b.label, "n_q": math.nan,
                     "kbps": b.kbps, "real_kbps": real, "engine": b.engine, **scores}
                )  # fmt: skip
                if example is not None and est is not None:
                    example.reconstructions[b.label] = est
                advance(1)

            submit(_baseline_job, (b, audio, sr, runnable, max_lag, keep), got_baseline)
        for k in reversed(ks):
            t0 = time.perf_counter()
            est = codec.decode(_first(codes, k), length=audio.shape[-1]).numpy()
            model_s += time.perf_counter() - t0
            label = f"{prefix} k={k}"
            row = {
                **base,
                "codec": "rvqkit",
                "setting": "k",
                "label": label,
                "n_q": k,
                "kbps": kbps[k],
                "real_kbps": kbps[k],
                "ecdc_kbps": math.nan,
                "ecdc_lm_kbps": math.nan,
                "engine": codec.source,
                **_tokens(codec, codes, k, seconds),
            }
            if example is not None:
                example.reconstructions[label] = est

            def got_scores(scores, row=row) -> None:
                rows.append({**row, **scores})
                advance(1)

            submit(_score_job, (audio, est, sr, runnable, max_lag), got_scores)

    def _loop() -> None:
        nonlocal model_s
        for start in range(0, len(listed), ITEM_BATCH):
            batch = []
            for i in range(start, min(start + ITEM_BATCH, len(listed))):
                item_id, audio, reason = load(i)
                if audio is None:
                    skipped_items.append({"item": item_id, "reason": reason or "unreadable"})
                    advance(per_item)
                else:
                    batch.append((item_id, np.ascontiguousarray(audio, dtype=np.float32)))
            if not batch:
                continue
            t0 = time.perf_counter()
            # each item's codes exactly as encode(item) alone (the family's batch-exact path)
            coded = codec.encode_items([torch.from_numpy(a) for _, a in batch], sr, n_q=top)
            model_s += time.perf_counter() - t0
            for (item_id, audio), codes in zip(batch, coded, strict=True):
                item_rows(item_id, audio, codes)

    try:
        with torch_threads(model_threads(workers)):
            _loop()
        collect(0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    order = {it.id: i for i, (_, it) in enumerate(listed)}
    rows.sort(
        key=lambda r: (order[r["item"]], r["codec"] != "rvqkit", r["setting"], r["kbps"], r.get("n_q", 0))
    )
    usage = [{"codebook": q + 1, **codebook_usage_counts(counts[q])} for q in range(top)]
    family = NAMES.get(codec.family, codec.family)
    scored = [r for r in rows if r["setting"] == "k" and r["n_q"] == top]
    info = {
        "model": codec.source,
        "family": codec.family,
        "weights_sha256": None,
        "sample_rate": sr,
        "channels": ch,
        "frame_rate": codec.frame_rate,
        "codebook_size": size,
        "num_codebooks": codec.num_codebooks,
        "bandwidths": [],
        "n_q": ks,
        "top_n_q": top,
        "kbps": {str(k): kbps[k] for k in ks},
        "items": len(listed),
        "items_scored": len(listed) - len(skipped_items),
        "seconds": float(sum(r["seconds"] for r in scored)),
        "skipped_items": skipped_items,
        "metrics": metric_status,
        "metric_units": {m: M.UNITS[m] for m in wanted},
        "baselines": {"used": [{"label": b.label, "engine": b.engine} for b in plan], "missing": missing},
        "entropy_coding": {
            "lm": None,
            "items": 0,
            "note": (
                f"{family} has no .ecdc format or entropy-coding LM: real_kbps is the nominal bitrate "
                f"({unit(codec)} x log2({size}) bits x frame rate)"
            ),
        },
        "codebooks": usage,
        "max_delay_samples": max_lag,
        "timing": {"total_s": time.perf_counter() - t_start, "model_s": model_s, "workers": workers},
    }
    return EvalResult(rows, info, kept)


def display_name(source: str | os.PathLike[str]) -> str:
    """A short name of a model source for row labels: a local path's last part, else the text as given."""
    p = Path(source).expanduser()
    return p.name if p.exists() and p.name else str(source)
