"""Run an evaluation: every item through the codec at every setting (and the baselines), scored.

The model works in this process; the metrics, the baselines and the LM entropy coding run in worker
processes beside it (spawned, one torch thread each, at a lower priority than the model). Each item is
encoded once, at the top bandwidth: residual quantization is greedy, so the codes of a lower bandwidth
are the first codebooks of the top one's, and every setting is a decode from the first k codebooks
(one decode for a bandwidth and the k equal to its codebook count).
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..codec import Codec
from ..corpus.items import Item
from ..corpus.loading import LoadSpec, load_item
from ..corpus.sources import AUDIO_SUFFIXES, Source, open_source
from ..encoded import Encoded
from ..errors import RvqkitError
from ..inspector import codebook_usage
from ..lm import torch_threads
from ..tokens.patterns import LayoutName, TokenLayout
from . import baselines as bl
from . import metrics as M

if TYPE_CHECKING:
    from ..family_codec import FamilyCodec

LAYOUTS: tuple[LayoutName, ...] = ("flatten", "delay", "parallel")
DEFAULT_LM_ITEMS = 3
DEFAULT_MAX_DELAY_S = 0.05  # delay search range for the aligned metrics, seconds either way
ITEM_BATCH = 8  # items encoded together (the encoder's LSTM batched across them on CPU)
Progress = Callable[[int, int], None]


class EvalError(RvqkitError):
    """Settings or inputs an evaluation cannot run with."""


@dataclass
class Example:
    """An item kept for listening: the original and each reconstruction (by row label), model rate
    (``rates``: the sample rate in Hz of a reconstruction at another rate, in a comparison of models)."""

    item: str
    original: np.ndarray
    reconstructions: dict[str, np.ndarray] = field(default_factory=dict)
    rates: dict[str, int] = field(default_factory=dict)


@dataclass
class EvalResult:
    """Rows (one per item and setting), the run's facts (``info``) and the examples to listen to."""

    rows: list[dict[str, Any]]
    info: dict[str, Any]
    examples: list[Example]


# -- workers -----------------------------------------------------------------------------------------------
_LMS: dict[str, Any] = {}


def _init_worker(parent: int) -> None:
    from ..corpus.pipeline import _init_worker as corpus_init  # lower priority, exit with the parent

    corpus_init(parent)
    torch.set_num_threads(1)


def _score_job(ref: np.ndarray, est: np.ndarray, sr: int, metrics: tuple[str, ...], max_lag: int):
    return M.score(ref, est, sr, metrics, max_lag)


def _baseline_job(
    b: bl.Baseline, ref: np.ndarray, sr: int, metrics: tuple[str, ...], max_lag: int, keep: bool
) -> tuple[dict[str, Any], float, np.ndarray | None]:
    try:
        est, kbps = bl.run(b, ref, sr)
    except Exception as e:  # an encoder that refuses this input: the row says why
        return {"skipped": f"{b.codec}: encoder failed ({type(e).__name__}: {e})"}, math.nan, None
    return M.score(ref, est, sr, metrics, max_lag), kbps, est if keep else None


def _ecdc_job(encoded: Encoded, lm_path: str | None) -> int:
    """Size in bytes of the ``.ecdc`` file of ``encoded`` (LM entropy-coded with the LM at ``lm_path``)."""
    from ..bitstream import write_ecdc
    from ..lm import load_lm

    lm = None
    if lm_path is not None:
        lm = _LMS.get(lm_path)
        if lm is None:
            lm = _LMS[lm_path] = load_lm(lm_path, encoded.model)
    buf = io.BytesIO()
    write_ecdc(buf, encoded, lm=lm)
    return len(buf.getvalue())


class _Inline:
    """The pool's interface run in this process (``workers=0``)."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


# -- inputs ------------------------------------------------------------------------------------------------
def list_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[tuple[Source | None, Item]]:
    """The items of audio files, folders and manifests (as ``rvqkit corpus`` lists them), in order;
    ids are made unique across inputs by prefixing the input's position where they clash."""
    out: list[tuple[Source | None, Item]] = []
    for text in inputs:
        p = Path(text).expanduser()
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES:
            out.append((None, Item(len(out), p.stem, str(p))))
            continue
        src = open_source(p if p.exists() else str(text))
        out += [(src, it) for it in src.items]
    ids = [it.id for _, it in out]
    if len(set(ids)) != len(ids):
        out = [(s, Item(i, f"{i}:{it.id}", it.path)) for i, (s, it) in enumerate(out)]
    if not out:
        raise EvalError("no input items")
    return out


def _check_settings(codec: Codec, bandwidths: Sequence[float] | None, n_q: Sequence[int] | None):
    bws = sorted({float(b) for b in (bandwidths if bandwidths is not None else codec.bandwidths)})
    if not bws:
        raise EvalError("bandwidths is empty")
    for b in bws:
        codec.n_q_for(b)  # BandwidthError naming the valid ones
    top = codec.n_q_for(bws[-1])
    ks = list(range(1, top + 1)) if n_q is None else sorted({int(k) for k in n_q})
    bad = [k for k in ks if not 1 <= k <= top]
    if bad:
        raise EvalError(f"n_q must be codebook counts in [1, {top}] (the top bandwidth's), got {bad}")
    return bws, ks, top


def _tokens_per_second(n_q: int, frames: int, seconds: float) -> dict[str, float]:
    """LM sequence positions per second of audio for each layout (multi-stream layouts predict n_q
    tokens per position), without begin or end tokens."""
    return {f"steps_per_s_{name}": TokenLayout(name, n_q).length(frames) / seconds for name in LAYOUTS}


# -- the run -----------------------------------------------------------------------------------------------
def run_eval(
    codec: Codec | FamilyCodec,
    inputs: Iterable[str | os.PathLike[str]] | Mapping[str, tuple[np.ndarray, int]],
    bandwidths: Sequence[float] | None = None,
    n_q: Sequence[int] | None = None,
    *,
    baselines: bool = True,
    metrics: Sequence[str] | None = None,
    lm: str | os.PathLike[str] | None = None,
    lm_items: int = DEFAULT_LM_ITEMS,
    workers: int = 2,
    examples: int = 0,
    max_delay_s: float = DEFAULT_MAX_DELAY_S,
    progress: Progress | None = None,
    name: str | None = None,
) -> EvalResult:
    """Evaluate ``codec`` on ``inputs``; see :func:`rvqkit.eval.evaluate` for the arguments. ``name``
    starts the model's row labels (default ``"rvqkit"``: ``"rvqkit 6 kbps"``, ``"rvqkit k=2"``). A Mimi,
    DAC or SNAC model (:class:`~rvqkit.family_codec.FamilyCodec`) goes to
    :func:`rvqkit.eval.families.run_family_eval` (rows per codebook count)."""
    from ..family_codec import FamilyCodec

    if isinstance(codec, FamilyCodec):
        from .families import run_family_eval

        return run_family_eval(
            codec, inputs, bandwidths, n_q, baselines=baselines, metrics=metrics, lm=lm, lm_items=lm_items,
            workers=workers, examples=examples, max_delay_s=max_delay_s, progress=progress, name=name,
        )  # fmt: skip
    prefix = name or "rvqkit"
    t_start = time.perf_counter()
    bws, ks, top = _check_settings(codec, bandwidths, n_q)
    wanted = tuple(M.METRICS if metrics is None else metrics)
    unknown = [m for m in wanted if m not in M.METRICS]
    if unknown:
        raise EvalError(f"unknown metrics {unknown}; choose from {', '.join(M.METRICS)}")
    metric_status = {m: "ok" if M.available(m) else M.why_unavailable(m) for m in wanted}
    runnable = tuple(m for m in wanted if M.available(m))
    sr, ch = codec.sample_rate, codec.channels
    plan, missing = bl.plan(bws, sr, ch) if baselines else ([], {"all": "baselines turned off"})
    lm_path = None if lm is None else str(lm)
    if lm_path is not None and not Path(lm_path).is_file():
        raise EvalError(f"{lm_path}: no such LM checkpoint")
    max_lag = int(round(max_delay_s * sr))
    top_bw = bws[-1]

    # decodes: n -> the rows it serves
    decode_rows: dict[int, list[tuple[str, float]]] = {}
    for b in bws:
        decode_rows.setdefault(codec.n_q_for(b), []).append(("bandwidth", b))
    for k in ks:
        decode_rows.setdefault(k, []).append(("k", codec.config.bandwidth_for_n_q(k)))
    per_item = sum(len(v) for v in decode_rows.values()) + len(plan)

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
    counts = torch.zeros(top, codec.codebook_size, dtype=torch.long)
    ecdc_lm: dict[tuple[str, int], float] = {}
    spec = LoadSpec(sr, ch)
    model_s = 0.0
    n_encoded = 0  # items encoded so far

    pool: Any
    if workers > 0:
        pool = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(os.getpid(),)
        )
    else:
        pool = _Inline()
    pending: dict[Future, Callable[[Any], None]] = {}
    max_pending = max(4, 4 * workers)

    def collect(block: bool, limit: int) -> None:
        while pending and (len(pending) > limit or not block):
            finished, _ = wait(list(pending), timeout=None if block else 0, return_when=FIRST_COMPLETED)
            if not finished:
                return
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
        collect(True, max_pending)

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

    def _loop() -> None:
        nonlocal model_s, n_encoded
        for start in range(0, len(listed), ITEM_BATCH):
            batch = []
            for i in range(start, min(start + ITEM_BATCH, len(listed))):
                item_id, audio, reason = load(i)
                if audio is None:
                    skipped_items.append({"item": item_id, "reason": reason or "unreadable"})
                    advance(per_item)
                else:
                    batch.append((i, item_id, np.ascontiguousarray(audio, dtype=np.float32)))
            if not batch:
                continue
            t0 = time.perf_counter()
            encoded = codec.encode([a for _, _, a in batch], sr, bandwidth=top_bw, lstm_batch=ITEM_BATCH)
            model_s += time.perf_counter() - t0
            for j, (_i, item_id, audio) in enumerate(batch):
                keep = len(kept) < examples
                if keep:
                    kept.append(Example(item_id, audio))
                example = kept[-1] if keep else None
                seconds = audio.shape[-1] / sr
                nf = int(encoded.frame_lengths[j])
                item_codes = encoded.codes[j, :, :nf]
                for q in range(top):
                    counts[q] += torch.bincount(item_codes[q], minlength=codec.codebook_size)
                base = {"item": item_id, "seconds": seconds}
                # baselines: all their work runs in the workers
                for b in plan:
                    label = b.label

                    def got_baseline(res, b=b, label=label, base=base, example=example) -> None:
                        scores, kbps, est = res
                        rows.append(
                            {
                                **base,
                                "codec": b.codec,
                                "setting": "baseline",
                                "label": label,
                                "n_q": math.nan,
                                "kbps": b.kbps,
                                "real_kbps": kbps,
                                "engine": b.engine,
                                **scores,
                            }
                        )
                        if example is not None and est is not None:
                            example.reconstructions[label] = est
                        advance(1)

                    submit(_baseline_job, (b, audio, sr, runnable, max_lag, keep), got_baseline)
                # entropy-coded size per bandwidth, for the first lm_items items
                one = _item_encoded(codec, encoded, j)
                n_encoded += 1
                if lm_path is not None and n_encoded <= lm_items:
                    for b in bws:
                        n = codec.n_q_for(b)

                        def got_size(size, key=(item_id, n), seconds=seconds) -> None:
                            ecdc_lm[key] = size * 8 / 1000 / seconds

                        submit(_ecdc_job, (_first(codec, one, n), lm_path), got_size)
                for n, served in sorted(decode_rows.items(), reverse=True):
                    t0 = time.perf_counter()
                    est = codec.decode(one, n_q=n)[0].numpy()
                    model_s += time.perf_counter() - t0
                    packed = _ecdc_job(_first(codec, one, n), None) * 8 / 1000 / seconds
                    facts = {
                        **base,
                        "codec": "rvqkit",
                        "n_q": n,
                        "ecdc_kbps": packed,
                        "engine": codec.name,
                        **_tokens_per_second(n, nf, seconds),
                    }
                    if example is not None and any(s == "bandwidth" for s, _ in served):
                        example.reconstructions[f"{prefix} {codec.config.bandwidth_for_n_q(n):g} kbps"] = est

                    def got_scores(scores, facts=facts, served=served) -> None:
                        for setting, kbps in served:
                            label = (
                                f"{prefix} {kbps:g} kbps"
                                if setting == "bandwidth"
                                else f"{prefix} k={facts['n_q']}"
                            )
                            rows.append({**facts, "setting": setting, "label": label, "kbps": kbps, **scores})
                        advance(len(served))

                    submit(_score_job, (audio, est, sr, runnable, max_lag), got_scores)

    # the model's threads and the workers share the cores: more threads than cores makes torch's
    # thread pool spin against the workers (measured on 2 busy cores: a 10 s encode took 40 s with 2
    # threads beside other work, 3.7 s with 1)
    try:
        with torch_threads(model_threads(workers)):
            _loop()
        collect(True, 0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    use_lm = lm_path is not None and lm_items > 0
    for r in rows:
        if r["codec"] == "rvqkit":
            r["ecdc_lm_kbps"] = (
                ecdc_lm.get((r["item"], r["n_q"]), math.nan) if r["setting"] == "bandwidth" else math.nan
            )
            r["real_kbps"] = r["ecdc_lm_kbps"] if use_lm else r["ecdc_kbps"]
    order = {it.id: i for i, (_, it) in enumerate(listed)}
    rows.sort(
        key=lambda r: (order[r["item"]], r["codec"] != "rvqkit", r["setting"], r["kbps"], r.get("n_q", 0))
    )
    usage = [{"codebook": q + 1, **codebook_usage_counts(counts[q])} for q in range(top)]
    info = {
        "model": codec.name,
        "weights_sha256": codec.weights_sha256,
        "sample_rate": sr,
        "channels": ch,
        "frame_rate": codec.frame_rate,
        "bandwidths": bws,
        "n_q": ks,
        "top_n_q": top,
        "items": len(listed),
        "items_scored": len(listed) - len(skipped_items),
        "seconds": float(sum(r["seconds"] for r in rows if r["setting"] == "bandwidth") / max(1, len(bws))),
        "skipped_items": skipped_items,
        "metrics": metric_status,
        "metric_units": {m: M.UNITS[m] for m in wanted},
        "baselines": {"used": [{"label": b.label, "engine": b.engine} for b in plan], "missing": missing},
        "entropy_coding": {
            "lm": lm_path,
            "items": min(lm_items, len(listed)) if use_lm else 0,
            "note": (
                f".ecdc size with LM entropy coding on the first {min(lm_items, len(listed))} items "
                "(real_kbps); ecdc_kbps is the size without it, for every item"
                if use_lm
                else "no entropy-coding LM given or found: real_kbps is the .ecdc size without entropy coding"
            ),
        },
        "codebooks": usage,
        "max_delay_samples": max_lag,
        "timing": {"total_s": time.perf_counter() - t_start, "model_s": model_s, "workers": workers},
    }
    return EvalResult(rows, info, kept)


def model_threads(workers: int) -> int | None:
    """Torch threads of the model while ``workers`` metric processes run (None: unchanged): the cores
    left to it, at least 1, never more than torch's current count."""
    if workers <= 0:
        return None
    return min(max(1, (os.cpu_count() or 2) - workers), torch.get_num_threads())


def codebook_usage_counts(counts: torch.Tensor) -> dict[str, float]:
    """Distinct codes, usage and entropy (bits) of one codebook from its code histogram."""
    idx = torch.repeat_interleave(torch.arange(len(counts)), counts)
    return codebook_usage(idx, len(counts))


def _item_encoded(codec: Codec, encoded: Encoded, j: int) -> Encoded:
    nf = int(encoded.frame_lengths[j])
    scales = None if encoded.scales is None else encoded.scales[j : j + 1]
    return codec.wrap_codes(
        encoded.codes[j : j + 1, :, :nf], scales, encoded.lengths[j : j + 1], encoded.frame_lengths[j : j + 1]
    )


def _first(codec: Codec, encoded: Encoded, n: int) -> Encoded:
    """``encoded`` with its first ``n`` codebooks (the codes of the bandwidth with ``n`` codebooks)."""
    return codec.wrap_codes(encoded.codes[:, :n], encoded.scales, encoded.lengths, encoded.frame_lengths)
