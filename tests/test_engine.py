"""The batching engine (rvqkit.engine): an item's codes and audio never depend on its batch-mates, its
slot, when it joined or how many slots are busy; streaming with any chunk sizes equals offline through
an engine of the same step; rows="alone" is the references' arithmetic (model.encode per item)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_signal

from rvqkit import Codec
from rvqkit.engine import Engine
from rvqkit.stream import StreamEncoder

pytestmark = pytest.mark.arith


def _items(codec: Codec, seconds: list[float], seed: int = 0) -> list[torch.Tensor]:
    sr = codec.sample_rate
    return [
        torch.from_numpy(make_signal(int(sr * s) + 7 * k, codec.channels, sr, seed=seed + k))
        for k, s in enumerate(seconds)
    ]


def _engine(codec: Codec, slots: int, rows: str = "batched", step: int | None = None) -> Engine:
    return Engine(codec.model, codec.device, "fp32", rows, slots, step)  # type: ignore[arg-type]


def _same(a, b) -> bool:
    return torch.equal(a.codes, b.codes) and (
        (a.scales is None and b.scales is None) or torch.equal(a.scales, b.scales)
    )


@pytest.mark.parametrize("which", ["24", "48"])
def test_items_equal_alone_whatever_batch_order_and_slots(which, request):
    """Random mixed lengths, random arrival orders and batch-mates, 1 to 5 slots: every item's codes
    (and 48 kHz scales) equal that item sent through the engine alone, bit for bit."""
    codec: Codec = request.getfixturevalue(f"codec{which}")
    rng = np.random.default_rng(int(which))
    seconds = [0.2, 3.3, 1.05, 2.6, 0.7, 4.1] if which == "24" else [0.4, 2.05, 1.0, 0.99]
    items = _items(codec, seconds)
    step = codec.sample_rate if which == "24" else None  # 1 s feeds: the long items take several
    alone = [_engine(codec, 2, step=step).encode([x], 8)[0] for x in items]
    for trial in range(3):
        order = rng.permutation(len(items))
        subset = order[: rng.integers(2, len(items) + 1)]
        slots = int(rng.integers(1, 6))
        engine = _engine(codec, slots, step=step)
        got = engine.encode([items[i] for i in subset], 8)
        for i, r in zip(subset, got, strict=True):
            assert _same(r, alone[i]), (trial, slots, i)
        assert engine.calls >= 1


def test_alone_rows_are_model_encode_per_item(codec24):
    """rows="alone" (Codec.encode's default on CPU) computes each item exactly as model.encode of that
    item alone (batch of one), which is what the parity tests hold against the references."""
    items = _items(codec24, [0.5, 5.2, 2.1])
    got = _engine(codec24, 4, rows="alone").encode(items, 8)
    with torch.inference_mode():
        for x, r in zip(items, got, strict=True):
            ref, _ = codec24.model.encode(x[None], 8)
            assert torch.equal(r.codes, ref[0])


@pytest.mark.parametrize("which", ["24", "48"])
def test_decode_items_equal_alone(which, request):
    codec: Codec = request.getfixturevalue(f"codec{which}")
    items = _items(codec, [0.3, 2.6, 1.2] if which == "24" else [0.5, 2.1])
    enc = codec.encode(items, codec.sample_rate, 6.0)
    codes = [enc.codes[i, :, : int(enc.frame_lengths[i])] for i in range(len(items))]
    scales = [
        None if enc.scales is None else enc.scales[i, : -(-int(enc.lengths[i]) // 47520)]
        for i in range(len(items))
    ]
    lengths = [int(n) for n in enc.lengths]
    step = codec.sample_rate if which == "24" else None
    together = _engine(codec, 3, step=step).decode(codes, scales, lengths)
    for i in range(len(items)):
        alone = _engine(codec, 3, step=step).decode([codes[i]], [scales[i]], [lengths[i]])[0]
        assert together[i].shape == (codec.channels, lengths[i])
        assert torch.equal(together[i], alone)
    # and Codec.decode (rows alone) within float rounding of the batched rows (LSTM ~1e-7)
    ref = codec.decode_items(enc)
    for a, b in zip(together, ref, strict=True):
        assert (a - b).abs().max().item() <= 1e-4


def test_codec_encode_list_equals_each_item_alone(codec24):
    """The public API: a list of variable-length items gives each item the codes it gets alone."""
    items = _items(codec24, [0.9, 2.7, 0.1])
    enc = codec24.encode(items, 24000, 6.0)
    for i, x in enumerate(items):
        one = codec24.encode(x, 24000, 6.0)
        f = int(one.frame_lengths[0])
        assert int(enc.frame_lengths[i]) == f
        assert torch.equal(enc.codes[i, :, :f], one.codes[0])
        assert not enc.codes[i, :, f:].any()


@pytest.mark.parametrize("seed", [0, 1])
def test_stream_encoder_with_a_step_equals_the_engine_for_any_chunks(codec24, seed):
    """StreamEncoder(step=s) fed random chunk sizes gives exactly the engine's codes at step s (the
    user's chunking never reaches the model); with the engine's default step, exactly Codec.encode."""
    rng = np.random.default_rng(seed)
    x = make_signal(int(3.4 * 24000) + seed, 1, 24000, seed=seed)
    for step in (1920, codec24.model.step_samples()):
        ref = _engine(codec24, 1, rows="alone", step=step).encode([torch.from_numpy(x)], 8)[0]
        enc = StreamEncoder(codec24, 6.0, step=step)
        parts, i = [], 0
        while i < x.shape[-1]:
            n = int(rng.integers(1, 9000))
            parts.append(enc.push(x[:, i : i + n]).codes)
            i += n
        parts.append(enc.flush().codes)
        assert torch.equal(torch.cat(parts, dim=-1)[0], ref.codes)
    assert torch.equal(ref.codes, codec24.encode(x, 24000, 6.0).codes[0])


def test_live_streams_equal_offline_engine(codec24):
    """Live streams through one engine (the server's path): streams open at different times, push
    random amounts, share steps; each stream's codes equal that signal encoded offline by an engine of
    the same step, and the decoded audio equals offline engine decoding of those codes."""
    rng = np.random.default_rng(3)
    step = 1920
    engine = _engine(codec24, 8, step=step)
    xs = [
        torch.from_numpy(make_signal(int(s * 24000), 1, 24000, seed=10 + k))
        for k, s in enumerate([1.3, 0.6, 2.0])
    ]
    jobs, pos, starts = [], [0, 0, 0], [0, 3, 6]
    codes: list[list[torch.Tensor]] = [[] for _ in xs]
    for t in range(400):
        for k in range(len(xs)):
            if t == starts[k]:
                jobs.append((k, engine.open_encoder(8)))
        for k, job in jobs:
            if job.ended:
                continue
            n = int(rng.integers(0, 4000))
            job.push(xs[k][:, pos[k] : pos[k] + n])
            pos[k] += n
            if pos[k] >= xs[k].shape[-1]:
                job.end()
        engine.advance([j for _, j in jobs])
        for k, job in jobs:
            codes[k] += [p.codes[0] for p in job.collect()]
        if len(jobs) == len(xs) and all(j.done for _, j in jobs):
            break
    offline = _engine(codec24, 8, step=step).encode(xs, 8)
    for k in range(len(xs)):
        assert torch.equal(torch.cat(codes[k], dim=-1), offline[k].codes), k
    # decode: live, codes pushed in random pieces, equals offline engine decoding
    dec = [engine.open_decoder(8) for _ in xs]
    for k, job in enumerate(dec):
        c, i = offline[k].codes, 0
        while i < c.shape[-1]:
            n = int(rng.integers(1, 40))
            job.push(c[:, i : i + n])
            i += n
            engine.advance(dec)
        job.end()
    engine.advance(dec)
    ref = _engine(codec24, 8, step=step).decode(
        [o.codes for o in offline], [None] * len(xs), [x.shape[-1] for x in xs]
    )
    for k, job in enumerate(dec):
        audio = torch.cat([a[0] for a in job.collect()], dim=-1)[:, : xs[k].shape[-1]]
        assert torch.equal(audio, ref[k])


def test_engine_arguments_are_checked(codec24):
    for kwargs, match in (
        (dict(rows="many"), "rows must be"),
        (dict(slots=0), "slots must be at least 1"),
        (dict(step=0), "step must be at least 1"),
    ):
        with pytest.raises(ValueError, match=match):
            Engine(codec24.model, codec24.device, **kwargs)  # type: ignore[arg-type]
