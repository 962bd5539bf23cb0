"""WebSocket streaming: ``/v1/stream/encode`` (PCM in, codes out) and ``/v1/stream/decode`` (codes in,
PCM out), and the hub that runs all live streams on one :class:`rvqkit.engine.Engine`.

Each connection owns an engine :class:`~rvqkit.engine.Job` (its stream's model state); its resampling and
channel conversion stay with the connection, before the job. Connections never call the model
themselves: they queue what they receive and wake the :class:`StreamHub`, whose single loop takes
everything pending from every stream, pushes it into the jobs and runs one :meth:`Engine.advance
<rvqkit.engine.Engine.advance>` over them in a worker thread: the engine's batching rule (one model call
per group of streams in the same phase, see :mod:`rvqkit.engine`) is the only one. While a step runs, new
audio keeps queueing and goes into the next step, so a slow step delays streams but never drops their
audio (a stream more than ``max_backlog_s`` behind is closed instead).

Feeds. Live 24 kHz streams are fed in regular feeds of :data:`STEP_SAMPLES` (80 ms) as soon as a whole
one has arrived, and at the end one final feed with the rest (0 to 79 ms): :func:`live_feed`. The
engine's own rule for whole items (:func:`rvqkit.model.feed_rule`) holds back two steps so that its final
feed is never narrow; live, that would hold every frame's codes back 160 ms, so the server's jobs
(:class:`LiveEncodeJob`, :class:`LiveDecodeJob`) override the feed. The feeds still depend only on the
signal's length, so a stream's codes are exactly :func:`encode_offline` of the whole signal through the
same engine, however its audio arrived and whichever streams shared its calls; they differ from
:meth:`Engine.encode <rvqkit.engine.Engine.encode>` only where its final feed is wider (the last
two steps), at near-ties. The 48 kHz model keeps the engine's rule (one 1 s segment per feed).

Protocol (JSON text messages; audio as binary messages; see docs/server.md):
encode: client ``{"sample_rate", "channels", "format", "bandwidth"}`` → server ``{"type": "ready", ...}``;
client binary PCM (interleaved, any size) ... → server ``{"type": "codes", "start", "codes", ...}`` as
frames become final; client ``{"type": "end"}`` → server last codes, ``{"type": "done", ...}``, close.
decode: client ``{"format", "length"}`` → ``ready``; client codes messages (as the encode socket sends
them) → server binary PCM; ``{"type": "end"}`` → last PCM, ``done``, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from fastapi import FastAPI, WebSocket
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..audio import convert_channels, resampled_length
from ..codec import Codec
from ..engine import DecodeJob, EncodeJob, Engine, Job
from ..errors import RvqkitError
from ..packets import CodePacket
from ..pcm import PCM_DTYPES, FrameSplitter, StreamResampler, float_to_pcm, frame_bytes, pcm_to_float
from .gate import ModelGate
from .limits import LimitError, ServerSettings
from .schemas import CodesMessage, ControlMessage, DecodeStart, EncodeStart

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_LATER, CLOSE_ERROR = 1000, 1008, 1013, 1011
STEP_SAMPLES = 1920  # a live 24 kHz stream's regular feed: 80 ms, 6 frames (the 48 kHz model ignores it)
DTYPES: dict[str, np.dtype] = PCM_DTYPES
INLINE_BYTES = 64 * 1024  # PCM messages up to this size, at the model's rate, convert on the event loop
THNN_MAX_ROWS = 15  # most rows a 1-thread CPU 1x1 convolution keeps off oneDNN (rows_per_call)
INLINE_JSON_BYTES = 16 * 1024  # codes messages up to this size are parsed on the event loop


class StreamClosed(Exception):
    """Raised inside a connection to end it with an error message and a close code."""

    def __init__(self, kind: str, message: str, code: int = CLOSE_POLICY) -> None:
        super().__init__(message)
        self.kind, self.code = kind, code


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
        return live_feed(self.waiting, self.ended, max(1, step // self.model.cfg.hop_length))


def open_encoder(engine: Engine, n_q: int) -> LiveEncodeJob:
    """A live encode job on ``engine``: push audio ``[C, n]`` at the model's rate, collect
    :class:`CodePacket` rows (as :meth:`Engine.open_encoder <rvqkit.engine.Engine.open_encoder>`)."""
    model = engine.model
    empty = torch.zeros(model.cfg.audio_channels, 0)
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
class _Stream:
    """What one connection has queued for the model, its engine job, and the channel its results come
    back on. Only the hub's step (one at a time, in its worker thread) touches the job."""

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
        self.streams: list[_Stream] = []
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

    def open_encoder(self, n_q: int) -> _Stream:
        """A new encode stream at ``n_q`` codebooks (its job opens now)."""
        return _Stream("encode", self.engine, n_q, open_encoder(self.engine, n_q))

    def open_decoder(self) -> _Stream:
        """A new decode stream (its job opens with its first codes, whose codebooks it takes)."""
        return _Stream("decode", self.engine)

    def try_open(self) -> bool:
        if self.active >= self.settings.max_streams:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1

    def register(self, s: _Stream) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._wake = loop, asyncio.Event()
            self._task = loop.create_task(self._run())
        self.streams.append(s)

    def unregister(self, s: _Stream) -> None:
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
    def _step(self, work: list[tuple[_Stream, list[Any], bool]]) -> list[list[Any]]:
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


# -- connection helpers ------------------------------------------------------------------------------------
class Pace:
    """A connection's clock against slow clients: after ``stream_grace_s`` a stream must have carried at
    least ``min_stream_rate`` seconds of audio per second open (a client trickling a few bytes every few
    seconds would otherwise hold a stream slot for hours)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.t0 = time.monotonic()
        self.audio_s = 0.0  # seconds of audio (or of codes) received so far

    def timeout(self) -> float:
        """How long the next receive may wait: the idle timeout, or less when the rate would fail first."""
        s = self.settings
        if s.min_stream_rate <= 0:
            return s.idle_timeout_s
        due = max(s.stream_grace_s, self.audio_s / s.min_stream_rate) - (time.monotonic() - self.t0)
        return max(0.0, min(s.idle_timeout_s, due))

    def check(self) -> None:
        s = self.settings
        elapsed = time.monotonic() - self.t0
        if (
            s.min_stream_rate > 0
            and elapsed > s.stream_grace_s
            and self.audio_s < s.min_stream_rate * elapsed
        ):
            raise StreamClosed(
                "too_slow",
                f"{self.audio_s:.1f} s of audio in {elapsed:.0f} s; a stream must carry at least "
                f"{s.min_stream_rate:g} s of audio per second after the first {s.stream_grace_s:g} s",
            )


async def _receive(ws: WebSocket, settings: ServerSettings, pace: Pace) -> MutableMapping[str, Any]:
    timeout = pace.timeout()
    try:
        msg = await asyncio.wait_for(ws.receive(), timeout)
    except asyncio.TimeoutError as e:
        pace.check()
        raise StreamClosed("idle_timeout", f"nothing received for {timeout:g} s; closing") from e
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    size = len(msg.get("bytes") or b"") + len(msg.get("text") or "")
    if size > settings.max_message_bytes:
        raise StreamClosed("too_large", f"message of {size} bytes; the limit is {settings.max_message_bytes}")
    return msg


def _parse(model: type[BaseModel], text: str | dict | None, what: str) -> Any:
    """``text`` (JSON, or a dict already parsed) validated as ``model``; else a ``bad_request`` close."""
    if text is None:
        raise StreamClosed("bad_request", f"expected a JSON text message ({what}), got binary")
    try:
        return model.model_validate(text) if isinstance(text, dict) else model.model_validate_json(text)
    except ValidationError as e:
        errs = "; ".join(
            f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors(include_url=False)[:3]
        )
        raise StreamClosed("bad_request", f"bad {what}: {errs}") from e


async def _send_json(ws: WebSocket, data: dict[str, Any]) -> None:
    await ws.send_text(json.dumps(data))


async def _fail(ws: WebSocket, kind: str, message: str, code: int) -> None:
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:  # bounded: a client that does not read must not hold the connection open
            await asyncio.wait_for(_send_json(ws, {"type": "error", "error": kind, "message": message}), 5.0)
            await asyncio.wait_for(ws.close(code=code, reason=kind[:100]), 5.0)
        except Exception:  # the client went away first, or does not read
            pass


async def _serve(ws: WebSocket, hub: StreamHub, body: Callable[[], Any]) -> None:
    """Accept, check the stream limit, run ``body``, and turn every failure into an error + close."""
    await ws.accept()
    if not hub.try_open():
        await _fail(
            ws,
            "too_many_streams",
            f"the server is at its limit of {hub.settings.max_streams} concurrent streams; try again later",
            CLOSE_TRY_LATER,
        )
        return
    try:
        await body()
    except StreamClosed as e:
        await _fail(ws, e.kind, str(e), e.code)
    except LimitError as e:
        await _fail(ws, "too_large", str(e), CLOSE_POLICY)
    except RvqkitError as e:
        await _fail(ws, "bad_request", str(e), CLOSE_POLICY)
    except WebSocketDisconnect:
        pass
    except Exception as e:  # a real fault: tell the client, keep the server up
        await _fail(ws, "internal", f"internal error ({type(e).__name__})", CLOSE_ERROR)
    finally:
        hub.release()


async def _pump(ws: WebSocket, s: _Stream, on_result: Callable[[Any], Any]) -> None:
    """Send each step's results to the client until the end marker."""
    while True:
        results = await s.outbox.get()
        for r in results:
            if isinstance(r, Exception):
                kind = "bad_request" if isinstance(r, RvqkitError) else "internal"
                raise StreamClosed(kind, str(r), CLOSE_POLICY if kind == "bad_request" else CLOSE_ERROR)
            if r is None:
                return
            await on_result(r)


async def _run_stream(
    ws: WebSocket, hub: StreamHub, s: _Stream, read: Callable[[], Any], on_result: Callable[[Any], Any]
) -> None:
    """Read messages and send results concurrently; either failing ends both."""
    hub.register(s)
    try:
        reader = asyncio.ensure_future(read())
        sender = asyncio.ensure_future(_pump(ws, s, on_result))
        done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                for other in (reader, sender):
                    other.cancel()
                raise t.exception()
        await sender
    finally:
        hub.unregister(s)


# -- the sockets -------------------------------------------------------------------------------------------
def add_stream_routes(app: FastAPI, hub: StreamHub) -> None:
    codec, settings = hub.codec, hub.settings
    rate, hop = codec.sample_rate, codec.hop_length

    @app.websocket("/v1/stream/encode")
    async def stream_encode(ws: WebSocket) -> None:
        pace = Pace(settings)

        async def body() -> None:
            start = _parse(EncodeStart, (await _receive(ws, settings, pace)).get("text"), "start message")
            n_q = codec.n_q_for(start.bandwidth)
            s = hub.open_encoder(n_q)
            frames_in = FrameSplitter(frame_bytes(start.format, start.channels))
            resampler = StreamResampler(start.sample_rate, rate, start.channels)
            max_samples = settings.max_stream_s * rate
            max_backlog = settings.max_backlog_s * rate
            # frames: code frames sent; samples: model-rate samples queued; frames_in: PCM frames received
            state: dict[str, Any] = {"frames": 0, "samples": 0, "frames_in": 0}
            await _send_json(
                ws,
                {
                    "type": "ready",
                    "model": codec.name,
                    "sample_rate": rate,
                    "channels": codec.channels,
                    "n_q": n_q,
                    "bandwidth": codec.config.bandwidth_for_n_q(n_q),
                    "frame_rate": codec.frame_rate,
                    "hop_length": hop,
                },
            )

            def admit(frames_in: int) -> None:
                """Count ``frames_in`` PCM frames against the limits before converting them: the cost is
                what they become at the model's rate."""
                state["frames_in"] += frames_in
                cost = resampled_length(state["frames_in"], start.sample_rate, rate)
                pace.audio_s = cost / rate
                if cost > max_samples:
                    raise LimitError(f"stream longer than {settings.max_stream_s:g} s")
                # audio received whose codes have not been sent yet: the server falling behind, or the
                # client not reading its codes
                if cost - state["frames"] * hop > max_backlog:
                    raise StreamClosed(
                        "overloaded",
                        f"more than {settings.max_backlog_s:g} s of audio without codes sent back (the server "
                        "is not keeping up, or the client is not reading); closing",
                        CLOSE_TRY_LATER,
                    )
                pace.check()

            # runs in a worker thread (conversion of small messages without resampling, a few vector
            # operations on at most INLINE_BYTES, runs inline): the event loop never waits on soxr
            def to_model(pcm: bytes, last: bool) -> np.ndarray:
                x = resampler.process(pcm_to_float(pcm, start.format, start.channels), last=last)
                if not np.isfinite(x).all():
                    raise StreamClosed("bad_audio", "audio contains NaN or Inf samples")
                return np.ascontiguousarray(convert_channels(np.ascontiguousarray(x), codec.channels))

            def queue(x: np.ndarray) -> None:
                if x.shape[-1] == 0:
                    return
                s.pending.append(x)
                state["samples"] += x.shape[-1]
                hub.wake()

            async def read() -> None:
                while True:
                    msg = await _receive(ws, settings, pace)
                    if msg.get("bytes") is not None:
                        pcm = frames_in.split(msg["bytes"])
                        admit(len(pcm) // frames_in.width)
                        if not resampler.active and len(pcm) <= INLINE_BYTES:  # cheaper than a thread hop
                            queue(to_model(pcm, False))
                        else:
                            queue(await asyncio.to_thread(to_model, pcm, False))
                        continue
                    _parse(ControlMessage, msg.get("text"), "control message")
                    if frames_in.carry:
                        raise StreamClosed("bad_audio", "the PCM ended inside a sample")
                    if resampler.active:
                        queue(await asyncio.to_thread(to_model, b"", True))
                    if state["samples"] == 0:
                        raise StreamClosed("bad_audio", "the stream ended before any audio")
                    s.end = True
                    hub.wake()
                    return

            async def send(packet: CodePacket) -> None:
                if packet.num_frames == 0:
                    return
                await _send_json(
                    ws,
                    {
                        "type": "codes",
                        "start": state["frames"],
                        "codes": packet.codes[0].tolist(),
                        "scales": None if packet.scales is None else packet.scales[0].tolist(),
                        "segment_frames": packet.segment_frames,
                    },
                )
                state["frames"] += packet.num_frames

            await _run_stream(ws, hub, s, read, send)
            await _send_json(ws, {"type": "done", "frames": state["frames"], "samples": state["samples"]})
            await ws.close(CLOSE_NORMAL)

        await _serve(ws, hub, body)

    @app.websocket("/v1/stream/decode")
    async def stream_decode(ws: WebSocket) -> None:
        pace = Pace(settings)

        async def body() -> None:
            start = _parse(DecodeStart, (await _receive(ws, settings, pace)).get("text"), "start message")
            if start.length is not None and start.length > settings.max_stream_s * rate:
                raise LimitError(f"length beyond the stream limit of {settings.max_stream_s:g} s")
            s = hub.open_decoder()
            # n_q: codebooks of the first message; samples: PCM samples sent; frames: code frames received
            state: dict[str, Any] = {"n_q": None, "samples": 0, "frames": 0}
            max_frames = settings.max_stream_s * codec.frame_rate
            max_backlog = settings.max_backlog_s * rate
            seg_frames = -(-(codec.config.segment_length or 0) // hop)
            await _send_json(
                ws,
                {
                    "type": "ready",
                    "model": codec.name,
                    "sample_rate": rate,
                    "channels": codec.channels,
                    "format": start.format,
                },
            )

            # runs in a worker thread (but messages up to INLINE_JSON_BYTES inline): parsing and checking
            # a message (up to max_message_bytes of JSON)
            def packet_of(text: str) -> CodePacket | None:
                """The message's codes as a packet, or None for ``{"type": "end"}``."""
                try:
                    obj = json.loads(text)
                except ValueError:
                    obj = None
                if not isinstance(obj, dict):
                    raise StreamClosed("bad_request", "a codes message is a JSON object")
                if obj.get("type") == "end":
                    return None
                m = _parse(CodesMessage, obj, "codes message")
                n_q = len(m.codes)
                if not 1 <= n_q <= codec.num_codebooks:
                    raise StreamClosed("bad_codes", f"codes must hold 1..{codec.num_codebooks} codebooks")
                if state["n_q"] is not None and n_q != state["n_q"]:
                    raise StreamClosed("bad_codes", f"codebooks changed from {state['n_q']} to {n_q}")
                frames = len(m.codes[0])
                if any(len(r) != frames for r in m.codes):
                    raise StreamClosed("bad_codes", "every codebook row must hold the same number of frames")
                try:
                    codes: np.ndarray = np.array(m.codes, dtype=np.int64).reshape(n_q, frames)
                except OverflowError:
                    codes = np.full(1, -1)
                if codes.size and (codes.min() < 0 or codes.max() >= codec.codebook_size):
                    raise StreamClosed("bad_codes", f"codes out of range [0, {codec.codebook_size})")
                scales = None
                if codec.config.normalize:
                    ok = (
                        sum(m.segment_frames) == frames
                        and m.scales is not None
                        and len(m.scales) == len(m.segment_frames)
                        and all(0 < n <= seg_frames for n in m.segment_frames)
                    )
                    if not ok:
                        raise StreamClosed(
                            "bad_codes",
                            "48 kHz codes come in whole segments: segment_frames summing to the frames "
                            "and one scale per segment",
                        )
                    if not all(np.isfinite(m.scales) & (np.asarray(m.scales) > 0)):
                        raise StreamClosed("bad_codes", "scales must be finite and > 0")
                    scales = torch.tensor([m.scales], dtype=torch.float32) if m.scales else None
                state["n_q"] = n_q
                return CodePacket(torch.from_numpy(codes)[None], scales, list(m.segment_frames))

            def admit(p: CodePacket) -> None:
                state["frames"] += p.num_frames
                pace.audio_s = state["frames"] * hop / rate
                if state["frames"] > max_frames:
                    raise LimitError(f"stream longer than {settings.max_stream_s:g} s")
                # codes received whose PCM has not been sent: the server falling behind, or the client
                # not reading its PCM (which would otherwise pile up here)
                if state["frames"] * hop - state["samples"] > max_backlog:
                    raise StreamClosed(
                        "overloaded",
                        f"more than {settings.max_backlog_s:g} s of codes without PCM sent back (the server "
                        "is not keeping up, or the client is not reading); closing",
                        CLOSE_TRY_LATER,
                    )
                pace.check()

            async def read() -> None:
                while True:
                    text = (await _receive(ws, settings, pace)).get("text")
                    if text is None:
                        raise StreamClosed("bad_request", "the decode socket takes JSON codes messages")
                    small = len(text) <= INLINE_JSON_BYTES  # parsed inline: cheaper than a thread hop
                    p = packet_of(text) if small else await asyncio.to_thread(packet_of, text)
                    if p is None:
                        s.end = True
                        hub.wake()
                        return
                    admit(p)
                    if p.num_frames:
                        s.pending.append(p)
                        hub.wake()

            async def send(audio: torch.Tensor) -> None:
                if start.length is not None:  # never past the signal's length
                    audio = audio[..., : max(0, start.length - state["samples"])]
                if audio.shape[-1] == 0:
                    return
                await ws.send_bytes(float_to_pcm(audio[0].numpy(), start.format))
                state["samples"] += audio.shape[-1]

            await _run_stream(ws, hub, s, read, send)
            await _send_json(ws, {"type": "done", "samples": state["samples"]})
            await ws.close(CLOSE_NORMAL)

        await _serve(ws, hub, body)
