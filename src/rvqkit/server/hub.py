"""The hub that runs every live stream on one :class:`rvqkit.engine.Engine`, and the live jobs it runs.

Each connection (:mod:`rvqkit.server.sessions`) owns an engine :class:`~rvqkit.engine.Job` (its stream's
model state); its resampling and channel conversion stay with the connection, before the job.
Connections never call the model themselves: they queue what they receive and wake the
:class:`StreamHub`, whose single loop takes everything pending from every stream, pushes it into the jobs
and runs one :meth:`Engine.advance <rvqkit.engine.Engine.advance>` over them in a worker thread: the
engine's batching rule (one model call per group of streams in the same phase, see :mod:`rvqkit.engine`)
is the only one. While a step runs, new audio keeps queueing and goes into the next step, so a slow step
delays streams but never drops their audio (a stream more than ``max_backlog_s`` behind is closed
instead).

Feeds. Live 24 kHz streams are fed in regular feeds of :data:`STEP_SAMPLES` (80 ms) as soon as a whole
one has arrived, and at the end one final feed with the rest (0 to 79 ms): :func:`live_feed`. The
engine's own rule for whole items (:func:`rvqkit.model.feed_rule`) holds back two steps so that its final
feed is never narrow; live, that would hold every frame's codes back 160 ms, so the server's jobs
(:class:`LiveEncodeJob`, :class:`LiveDecodeJob`) override the feed. The feeds still depend only on the
signal's length, so a stream's codes are exactly :func:`encode_offline` of the whole signal through the
same engine, however its audio arrived and whichever streams shared its calls; they differ from
:meth:`Engine.encode <rvqkit.engine.Engine.encode>` only where its final feed is wider (the last
two steps), at near-ties. The 48 kHz model keeps the engine's rule (one 1 s segment per feed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from ..codec import Codec
from ..engine import DecodeJob, EncodeJob, Engine, Job
from ..packets import CodePacket
from .gate import ModelGate
from .limits import ServerSettings

STEP_SAMPLES = 1920  # a live 24 kHz stream's regular feed: 80 ms, 6 frames (the 48 kHz model ignores it)
THNN_MAX_ROWS = 15  # most rows a 1-thread CPU 1x1 convolution keeps off oneDNN (rows_per_call)


# -- the live jobs -----------------------------------------------------------------------------------------
def live_feed(waiting: int, ended: bool, step: int) -> tuple[int, bool] | None:
    """A live causal stream's next feed with ``waiting`` samples (or frames) in: ``(n, final)``, or None to
    wait. A regular feed of ``step`` as soon as one is in; once ended, the rest (0 to ``step - 1``) in one
    final feed. Like :func:`rvqkit.model.feed_rule` the feeds depend only on the signal's length, but
    nothing is held back for the end (that rule's final feed is wider, and it holds two steps back)."""
    if waiting >= step:
        return step, False
    return (waiting, True) if ended else None


class LiveEncodeJob(EncodeJob):
    """An engine encode job fed by :func:`live_feed` (24 kHz; the 48 kHz model keeps its segment feeds).
    (The engine takes the feed rule from its jobs; it has no live rule of its own.)"""

    def feed(self, step: int) -> tuple[int, bool] | None:
        if self.model.segmented:
            return super().feed(step)
        return live_feed(self.waiting, self.ended, step)


class LiveDecodeJob(DecodeJob):
    """An engine decode job fed by :func:`live_feed` in frames (``step // hop``; 48 kHz: by segment)."""

    def feed(self, step: int) -> tuple[int, bool] | None:
        if self.model.segmented:
            return super().feed(step)
        return live_feed(self.waiting, self.ended, max(1, step // self.model.config.hop_length))


def open_encoder(engine: Engine, n_q: int) -> LiveEncodeJob:
    """A live encode job on ``engine``: push audio ``[C, n]`` at the model's rate, collect
    :class:`CodePacket` rows (as :meth:`Engine.open_encoder <rvqkit.engine.Engine.open_encoder>`)."""
    model = engine.model
    empty = torch.zeros(model.config.audio_channels, 0)
    return LiveEncodeJob(model, empty, model.init_encode_state(1, n_q), False)


def open_decoder(engine: Engine, n_q: int) -> LiveDecodeJob:
    """A live decode job on ``engine``: push :class:`CodePacket` s, collect audio ``[1, C, n]``."""
    model = engine.model
    return LiveDecodeJob(model, torch.zeros(n_q, 0, dtype=torch.long), model.init_decode_state(1), False)


def encode_offline(engine: Engine, audio: torch.Tensor, n_q: int) -> CodePacket:
    """Codes ``[1, n_q, frames]`` (and 48 kHz scales) of a whole signal ``[C, T]`` at the model's rate,
    through ``engine`` exactly as a live stream of it is encoded: the reference live codes equal."""
    job = open_encoder(engine, n_q)
    job.push(audio)
    job.end()
    engine.advance([job])
    return merge_packets(job.collect(), n_q)


def decode_offline(engine: Engine, packet: CodePacket) -> torch.Tensor:
    """Audio ``[1, C, frames * hop]`` of whole codes (48 kHz: with their segments and scales) through
    ``engine`` exactly as a live decode stream of them (the caller trims to the signal's length)."""
    job = open_decoder(engine, packet.codes.shape[1])
    job.push_packet(packet)
    job.end()
    engine.advance([job])
    return torch.cat(job.collect(), dim=-1)


def merge_packets(packets: list[CodePacket], n_q: int) -> CodePacket:
    """One packet of the frames of ``packets`` (one row each), in order."""
    if not packets:
        return CodePacket(torch.zeros(1, n_q, 0, dtype=torch.long))
    scales = [p.scales for p in packets if p.scales is not None]
    return CodePacket(
        torch.cat([p.codes for p in packets], dim=-1).cpu(),
        torch.cat(scales, dim=-1).cpu() if scales else None,
        [n for p in packets for n in p.segment_frames],
    )


# -- per-connection state ---------------------------------------------------------------------------------
@dataclass
class LiveStream:
    """What one connection has queued for the model, its engine job, and the channel its results come
    back on (a connection's :class:`~rvqkit.server.sessions.Session` queues into it and reads its
    outbox). Only the hub's step (one at a time, in its worker thread) touches the job."""

    kind: str  # "encode" or "decode"
    engine: Engine
    n_q: int | None = None  # encode: from the bandwidth; decode: that of the first codes message
    job: Job | None = None  # opened with the stream (encode) or at its first codes (decode)
    pending: list[Any] = field(default_factory=list)  # encode: float32 [C, n] arrays; decode: CodePackets
    end: bool = False
    taken_end: bool = False
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)

    def has_work(self) -> bool:
        return bool(self.pending) or (self.end and not self.taken_end)

    def take(self) -> tuple[list[Any], bool]:
        """Everything pending, and whether the stream ends after it."""
        items, self.pending = self.pending, []
        end = self.end and not self.taken_end
        self.taken_end = self.taken_end or end
        return items, end

    def feed(self, items: list[Any], end: bool) -> None:
        """Push ``items`` into the job (in the step's thread)."""
        if self.job is None:
            n_q = self.n_q or (items[0].codes.shape[1] if items else 1)
            opener = open_encoder if self.kind == "encode" else open_decoder
            self.job = opener(self.engine, n_q)
        if self.kind == "encode":
            if items:
                self.job.push(torch.from_numpy(np.concatenate(items, axis=-1)))
        else:
            for p in items:
                self.job.push_packet(p)  # type: ignore[attr-defined]  # decode streams open a DecodeJob
        if end:
            self.job.end()

    def results(self) -> list[Any]:
        """What the job made in the last step (one packet, or one piece of audio), and the end marker
        (None) once its final feed has run."""
        assert self.job is not None
        out = self.job.collect()
        if self.kind == "encode":
            res: list[Any] = [merge_packets(out, out[0].codes.shape[1])] if out else []
        else:
            res = [torch.cat(out, dim=-1).float().cpu()] if out else []
        return res + [None] if self.job.done else res


# -- the scheduler -----------------------------------------------------------------------------------------
class StreamHub:
    """Counts open streams against the limit and runs every stream's pending work on the one engine,
    one step at a time.

    The engine: ``codec``'s model, device and precision; ``rows="batched"`` with ``max_streams`` slots
    (streams in the same phase share model calls), or with ``batching`` off ``rows="alone"`` (one call
    per stream and feed); regular feeds of :data:`STEP_SAMPLES`."""

    def __init__(self, codec: Codec, settings: ServerSettings, gate: ModelGate) -> None:
        self.codec, self.settings, self.gate = codec, settings, gate
        self.engine = Engine(
            codec.model,
            codec.device,
            codec.precision,
            "batched" if settings.batching else "alone",
            settings.max_streams,
            STEP_SAMPLES,
        )
        self.active = 0
        self.streams: list[LiveStream] = []
        self.steps = 0  # scheduler steps run (for tests and the benchmark)
        self.step_seconds = 0.0  # total time in steps
        self.stream_steps = 0  # sum over steps of the streams each served
        self.step_log: deque[tuple[float, int]] = deque(maxlen=10_000)  # (seconds, streams) per step
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    @property
    def batching(self) -> bool:
        """Whether streams in the same phase share model calls (the engine's ``rows="batched"``)."""
        return self.engine.rows == "batched"

    def rows_per_call(self) -> int | None:
        """The most streams one engine call may take, or None for no limit.

        On CPU with one torch thread, PyTorch computes a kernel-size-1 convolution with its own kernel
        for fewer than 16 rows and with oneDNN from 16 rows on (``ConvParams::use_mkldnn``: "THNN is
        faster when single-threaded"), which round differently (~1e-7, measured: a 2 s item's codes then
        differ at a near-tie in 4 of 8 items). With more threads oneDNN runs every batch of 2 or more.
        So with one thread a step advances the streams at most 15 at a time, keeping every call in the
        rows a stream's offline encoding uses (2, see :mod:`rvqkit.engine`), and its codes exact. (The
        engine itself groups all streams of a phase into one call, whatever their number.)"""
        if (
            self.engine.rows == "batched"
            and self.engine.device.type == "cpu"
            and torch.get_num_threads() == 1
        ):
            return THNN_MAX_ROWS
        return None

    @property
    def calls(self) -> int:
        """Model calls the engine has made for the streams."""
        return self.engine.calls

    def open_encoder(self, n_q: int) -> LiveStream:
        """A new encode stream at ``n_q`` codebooks (its job opens now)."""
        return LiveStream("encode", self.engine, n_q, open_encoder(self.engine, n_q))

    def open_decoder(self) -> LiveStream:
        """A new decode stream (its job opens with its first codes, whose codebooks it takes)."""
        return LiveStream("decode", self.engine)

    def try_open(self) -> bool:
        if self.active >= self.settings.max_streams:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1

    def register(self, s: LiveStream) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._wake = loop, asyncio.Event()
            self._task = loop.create_task(self._run())
        self.streams.append(s)

    def unregister(self, s: LiveStream) -> None:
        if s in self.streams:
            self.streams.remove(s)

    def stats(self) -> dict[str, Any]:  # StatsResponse fields: ints and floats
        """Steps so far and, over the last 10 000 steps, step time (ms) and streams per step."""
        secs = np.array([t for t, _ in self.step_log]) * 1000
        per = np.array([n for _, n in self.step_log])
        return {
            "steps": self.steps,
            "calls": self.calls,
            "step_seconds_total": self.step_seconds,
            "stream_steps_total": self.stream_steps,
            "step_ms_median": float(np.median(secs)) if secs.size else 0.0,
            "step_ms_p99": float(np.percentile(secs, 99)) if secs.size else 0.0,
            "streams_per_step_mean": float(per.mean()) if per.size else 0.0,
        }

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def close(self) -> None:
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            ready = [s for s in self.streams if s.has_work()]
            if not ready:
                continue
            work = [(s, *s.take()) for s in ready]
            t = time.perf_counter()
            try:
                results = await asyncio.to_thread(self._step, work)
            except Exception as e:  # a fault in the step itself: end its streams, keep serving others
                results = [[e] for _ in work]
            self.step_log.append((time.perf_counter() - t, len(work)))
            self.steps += 1
            self.step_seconds += self.step_log[-1][0]
            self.stream_steps += len(work)
            for (s, _, _), result in zip(work, results, strict=True):
                s.outbox.put_nowait(result)
            if any(s.has_work() for s in self.streams):
                self._wake.set()

    # runs in a worker thread
    def _step(self, work: list[tuple[LiveStream, list[Any], bool]]) -> list[list[Any]]:
        """Push each stream's pending input into its job, run one :meth:`Engine.advance` over them all
        (every feed they can take, batched by the engine's rule), and collect each stream's results. A
        stream whose input fails gets the exception as its result; an advance that fails gives it to every
        stream of the step (their states are unknown now)."""
        results: list[list[Any]] = [[] for _ in work]
        ok: list[int] = []
        for i, (s, items, end) in enumerate(work):
            try:
                s.feed(items, end)
                ok.append(i)
            except Exception as e:
                results[i] = [e]
        if not ok:
            return results
        jobs = [cast(Job, work[i][0].job) for i in ok]  # feed() opened each job that took its input
        cap = self.rows_per_call()
        with self.gate.hold(stream=True):  # before any REST job's next piece
            try:
                for k in range(0, len(jobs), cap or len(jobs)):
                    self.engine.advance(jobs[k : k + (cap or len(jobs))])
            except Exception as e:
                for i in ok:
                    results[i] = [e]
                return results
        for i in ok:
            results[i] = work[i][0].results()
        return results
