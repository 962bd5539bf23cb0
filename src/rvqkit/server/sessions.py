"""One streaming connection as a session: :class:`EncodeSession` (``/v1/stream/encode``: PCM in, codes
out) and :class:`DecodeSession` (``/v1/stream/decode``: codes in, PCM out).

A session holds what its connection knows (the start message, its :class:`~rvqkit.server.hub.LiveStream`
on the hub, counters against the limits, its :class:`Pace`) and reacts to events: ``on_start`` (the
first message; the answer is the ``ready`` message), ``on_audio`` and ``on_codes`` (PCM or codes, in from
the client or out from the hub's steps), ``on_end`` (the client's end). :meth:`Session.run` drives them:
it reads the client's messages and sends the hub's results concurrently, either failing ending both.
Admission (the stream limit) and turning failures into error messages and close codes stay with the
socket routes (:mod:`rvqkit.server.sockets`).

Each client message is parsed and validated once: the start and control messages by their pydantic
model, and each codes message by one ``json.loads`` and one :class:`CodesMessage` validation of the
object (an ``{"type": "end"}`` object ends the stream instead).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import numpy as np
import torch
from fastapi import WebSocket
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocketDisconnect

from ..audio import convert_channels, resampled_length
from ..errors import RvqkitError
from ..packets import CodePacket
from ..pcm import FrameSplitter, StreamResampler, float_to_pcm, frame_bytes, pcm_to_float
from .hub import LiveStream, StreamHub
from .limits import LimitError, ServerSettings
from .schemas import CodesMessage, ControlMessage, DecodeStart, EncodeStart

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_LATER, CLOSE_ERROR = 1000, 1008, 1013, 1011
INLINE_BYTES = 64 * 1024  # PCM messages up to this size, at the model's rate, convert on the event loop
INLINE_JSON_BYTES = 16 * 1024  # codes messages up to this size are parsed on the event loop


class StreamClosed(Exception):
    """Raised inside a connection to end it with an error message and a close code."""

    def __init__(self, kind: str, message: str, code: int = CLOSE_POLICY) -> None:
        super().__init__(message)
        self.kind, self.code = kind, code


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


def parse_message(model: type[BaseModel], text: str | dict | None, what: str) -> Any:
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


async def send_json(ws: WebSocket, data: dict[str, Any]) -> None:
    await ws.send_text(json.dumps(data))


class Session:
    """One streaming connection on ``ws``, served by ``hub`` (whose codec and settings it uses).

    Subclasses set :attr:`stream` in ``on_start`` and implement :meth:`on_start`, :meth:`on_message`
    (each client message after the start; True when it ended the stream), :meth:`on_result` (each
    result of the hub's steps: sends it) and :meth:`done` (the last message)."""

    def __init__(self, ws: WebSocket, hub: StreamHub) -> None:
        self.ws, self.hub = ws, hub
        self.codec, self.settings = hub.codec, hub.settings
        self.rate, self.hop = hub.codec.sample_rate, hub.codec.hop_length  # Hz; samples per code frame
        self.pace = Pace(hub.settings)
        self.stream: LiveStream | None = None

    def on_start(self, text: str | None) -> dict[str, Any]:
        raise NotImplementedError

    async def on_message(self, msg: MutableMapping[str, Any]) -> bool:
        raise NotImplementedError

    async def on_result(self, result: Any) -> None:
        raise NotImplementedError

    def done(self) -> dict[str, Any]:
        raise NotImplementedError

    async def receive(self) -> MutableMapping[str, Any]:
        """The client's next message, within the idle timeout (or the pace's) and the size limit."""
        timeout = self.pace.timeout()
        try:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
        except asyncio.TimeoutError as e:
            self.pace.check()
            raise StreamClosed("idle_timeout", f"nothing received for {timeout:g} s; closing") from e
        if msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        size = len(msg.get("bytes") or b"") + len(msg.get("text") or "")
        if size > self.settings.max_message_bytes:
            raise StreamClosed(
                "too_large", f"message of {size} bytes; the limit is {self.settings.max_message_bytes}"
            )
        return msg

    def queue(self, item: Any) -> None:
        """Queue ``item`` (audio ``[C, n]`` or a :class:`CodePacket`) for the hub's next step."""
        assert self.stream is not None
        self.stream.pending.append(item)
        self.hub.wake()

    def end_stream(self) -> None:
        """Mark the stream ended: the hub's next step runs its final feed."""
        assert self.stream is not None
        self.stream.end = True
        self.hub.wake()

    async def run(self) -> None:
        """The conversation after admission: start and ``ready``, then the client's messages and the
        hub's results concurrently until the end, then ``done`` and a normal close."""
        await send_json(self.ws, self.on_start((await self.receive()).get("text")))
        assert self.stream is not None

        async def read() -> None:
            while not await self.on_message(await self.receive()):
                pass

        await _run_stream(self.hub, self.stream, read, self.on_result)
        await send_json(self.ws, self.done())
        await self.ws.close(CLOSE_NORMAL)


async def _pump(s: LiveStream, on_result: Callable[[Any], Any]) -> None:
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
    hub: StreamHub, s: LiveStream, read: Callable[[], Any], on_result: Callable[[Any], Any]
) -> None:
    """Read messages and send results concurrently; either failing ends both."""
    hub.register(s)
    try:
        reader = asyncio.ensure_future(read())
        sender = asyncio.ensure_future(_pump(s, on_result))
        done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                for other in (reader, sender):
                    other.cancel()
                raise t.exception()
        await sender
    finally:
        hub.unregister(s)


class EncodeSession(Session):
    """``/v1/stream/encode``: interleaved PCM in (any rate, channels and message size), codes out as
    frames become final.

    Fields (after ``on_start``): ``start`` (the client's :class:`EncodeStart`), ``n_q`` (codebooks at its
    bandwidth), ``splitter`` (whole PCM frames of the binary messages), ``resampler`` (the client's rate
    to the model's, in Hz), ``frames_in`` (PCM frames received), ``samples`` (samples queued, at the
    model's rate), ``frames`` (code frames sent)."""

    start: EncodeStart
    n_q: int
    splitter: FrameSplitter
    resampler: StreamResampler
    frames_in = samples = frames = 0

    def on_start(self, text: str | None) -> dict[str, Any]:
        """Validate the start message, open the stream; the ``ready`` message."""
        start = self.start = parse_message(EncodeStart, text, "start message")
        codec = self.codec
        self.n_q = codec.n_q_for(start.bandwidth)
        self.stream = self.hub.open_encoder(self.n_q)
        self.splitter = FrameSplitter(frame_bytes(start.format, start.channels))
        self.resampler = StreamResampler(start.sample_rate, self.rate, start.channels)
        return {
            "type": "ready",
            "model": codec.name,
            "sample_rate": self.rate,
            "channels": codec.channels,
            "n_q": self.n_q,
            "bandwidth": codec.config.bandwidth_for_n_q(self.n_q),
            "frame_rate": codec.frame_rate,
            "hop_length": self.hop,
        }

    async def on_message(self, msg: MutableMapping[str, Any]) -> bool:
        if msg.get("bytes") is not None:
            await self.on_audio(msg["bytes"])
            return False
        await self.on_end(msg.get("text"))
        return True

    def admit(self, frames_in: int) -> None:
        """Count ``frames_in`` PCM frames against the limits before converting them: the cost is what they
        become at the model's rate."""
        s = self.settings
        self.frames_in += frames_in
        cost = resampled_length(self.frames_in, self.start.sample_rate, self.rate)
        self.pace.audio_s = cost / self.rate
        if cost > s.max_stream_s * self.rate:
            raise LimitError(f"stream longer than {s.max_stream_s:g} s")
        # audio received whose codes have not been sent yet: the server falling behind, or the client not
        # reading its codes
        if cost - self.frames * self.hop > s.max_backlog_s * self.rate:
            raise StreamClosed(
                "overloaded",
                f"more than {s.max_backlog_s:g} s of audio without codes sent back (the server is not "
                "keeping up, or the client is not reading); closing",
                CLOSE_TRY_LATER,
            )
        self.pace.check()

    def to_model(self, pcm: bytes, last: bool) -> np.ndarray:
        """Whole PCM frames as ``float32 [C, n]`` at the model's rate and channels. Runs in a worker
        thread (but small messages without resampling run inline): the event loop never waits on soxr."""
        x = self.resampler.process(pcm_to_float(pcm, self.start.format, self.start.channels), last=last)
        if not np.isfinite(x).all():
            raise StreamClosed("bad_audio", "audio contains NaN or Inf samples")
        return np.ascontiguousarray(convert_channels(np.ascontiguousarray(x), self.codec.channels))

    def queue_audio(self, x: np.ndarray) -> None:
        if x.shape[-1] == 0:
            return
        self.samples += x.shape[-1]
        self.queue(x)

    async def on_audio(self, data: bytes) -> None:
        """A binary PCM message (any size; a frame cut between messages is carried)."""
        pcm = self.splitter.split(data)
        self.admit(len(pcm) // self.splitter.width)
        if not self.resampler.active and len(pcm) <= INLINE_BYTES:  # cheaper than a thread hop
            self.queue_audio(self.to_model(pcm, False))
        else:
            self.queue_audio(await asyncio.to_thread(self.to_model, pcm, False))

    async def on_end(self, text: str | None) -> None:
        """The client's ``{"type": "end"}``: flush the resampler, end the stream."""
        parse_message(ControlMessage, text, "control message")
        if self.splitter.carry:
            raise StreamClosed("bad_audio", "the PCM ended inside a sample")
        if self.resampler.active:
            self.queue_audio(await asyncio.to_thread(self.to_model, b"", True))
        if self.samples == 0:
            raise StreamClosed("bad_audio", "the stream ended before any audio")
        self.end_stream()

    async def on_codes(self, packet: CodePacket) -> None:
        """A step's codes (one row): sent as a ``codes`` message."""
        if packet.num_frames == 0:
            return
        await send_json(
            self.ws,
            {
                "type": "codes",
                "start": self.frames,
                "codes": packet.codes[0].tolist(),
                "scales": None if packet.scales is None else packet.scales[0].tolist(),
                "segment_frames": packet.segment_frames,
            },
        )
        self.frames += packet.num_frames

    async def on_result(self, result: Any) -> None:
        await self.on_codes(result)

    def done(self) -> dict[str, Any]:
        return {"type": "done", "frames": self.frames, "samples": self.samples}


class DecodeSession(Session):
    """``/v1/stream/decode``: codes messages in (as the encode socket sends them), interleaved PCM out at
    the model's rate.

    Fields (after ``on_start``): ``start`` (the client's :class:`DecodeStart`: PCM format, and the
    signal's length in samples if known), ``n_q`` (codebooks of the first codes message), ``frames``
    (code frames received), ``samples`` (PCM samples sent)."""

    start: DecodeStart
    n_q: int | None = None
    frames = samples = 0

    def on_start(self, text: str | None) -> dict[str, Any]:
        """Validate the start message, open the stream; the ``ready`` message."""
        start = self.start = parse_message(DecodeStart, text, "start message")
        s, codec = self.settings, self.codec
        if start.length is not None and start.length > s.max_stream_s * self.rate:
            raise LimitError(f"length beyond the stream limit of {s.max_stream_s:g} s")
        self.stream = self.hub.open_decoder()
        return {
            "type": "ready",
            "model": codec.name,
            "sample_rate": self.rate,
            "channels": codec.channels,
            "format": start.format,
        }

    async def on_message(self, msg: MutableMapping[str, Any]) -> bool:
        text = msg.get("text")
        if text is None:
            raise StreamClosed("bad_request", "the decode socket takes JSON codes messages")
        small = len(text) <= INLINE_JSON_BYTES  # parsed inline: cheaper than a thread hop
        p = self.packet_of(text) if small else await asyncio.to_thread(self.packet_of, text)
        if p is None:
            self.on_end()
            return True
        self.on_codes(p)
        return False

    def packet_of(self, text: str) -> CodePacket | None:
        """The message's codes as a packet, or None for ``{"type": "end"}``: parsed and validated once.
        Runs in a worker thread (but messages up to INLINE_JSON_BYTES inline): a message may hold up to
        ``max_message_bytes`` of JSON."""
        codec = self.codec
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise StreamClosed("bad_request", "a codes message is a JSON object")
        if obj.get("type") == "end":
            return None
        m = parse_message(CodesMessage, obj, "codes message")
        n_q = len(m.codes)
        if not 1 <= n_q <= codec.num_codebooks:
            raise StreamClosed("bad_codes", f"codes must hold 1..{codec.num_codebooks} codebooks")
        if self.n_q is not None and n_q != self.n_q:
            raise StreamClosed("bad_codes", f"codebooks changed from {self.n_q} to {n_q}")
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
            seg_frames = -(-(codec.config.segment_length or 0) // self.hop)
            ok = (
                sum(m.segment_frames) == frames
                and m.scales is not None
                and len(m.scales) == len(m.segment_frames)
                and all(0 < n <= seg_frames for n in m.segment_frames)
            )
            if not ok:
                raise StreamClosed(
                    "bad_codes",
                    "48 kHz codes come in whole segments: segment_frames summing to the frames and one "
                    "scale per segment",
                )
            if not all(np.isfinite(m.scales) & (np.asarray(m.scales) > 0)):
                raise StreamClosed("bad_codes", "scales must be finite and > 0")
            scales = torch.tensor([m.scales], dtype=torch.float32) if m.scales else None
        self.n_q = n_q
        return CodePacket(torch.from_numpy(codes)[None], scales, list(m.segment_frames))

    def on_codes(self, p: CodePacket) -> None:
        """A client's codes: counted against the limits, then queued for the hub."""
        s = self.settings
        self.frames += p.num_frames
        self.pace.audio_s = self.frames * self.hop / self.rate
        if self.frames > s.max_stream_s * self.codec.frame_rate:
            raise LimitError(f"stream longer than {s.max_stream_s:g} s")
        # codes received whose PCM has not been sent: the server falling behind, or the client not reading
        # its PCM (which would otherwise pile up here)
        if self.frames * self.hop - self.samples > s.max_backlog_s * self.rate:
            raise StreamClosed(
                "overloaded",
                f"more than {s.max_backlog_s:g} s of codes without PCM sent back (the server is not "
                "keeping up, or the client is not reading); closing",
                CLOSE_TRY_LATER,
            )
        self.pace.check()
        if p.num_frames:
            self.queue(p)

    def on_end(self) -> None:
        """The client's ``{"type": "end"}``: end the stream."""
        self.end_stream()

    async def on_audio(self, audio: torch.Tensor) -> None:
        """A step's audio ``[1, C, n]`` at the model's rate: sent as binary PCM, never past the length."""
        if self.start.length is not None:
            audio = audio[..., : max(0, self.start.length - self.samples)]
        if audio.shape[-1] == 0:
            return
        await self.ws.send_bytes(float_to_pcm(audio[0].numpy(), self.start.format))
        self.samples += audio.shape[-1]

    async def on_result(self, result: Any) -> None:
        await self.on_audio(result)

    def done(self) -> dict[str, Any]:
        return {"type": "done", "samples": self.samples}
