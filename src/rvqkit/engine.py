"""The one batching engine: many items through :class:`~rvqkit.model.EncodecModel`'s streaming interface,
in steps, with each item's codes exactly what it gets alone.

Every batched path of rvqkit runs here: :meth:`rvqkit.Codec.encode` / :meth:`~rvqkit.Codec.decode` of
lists of variable-length items, the corpus (local pipeline and Ray actors) and the server's live streams.

The batching rule, in one place:

1. **Feeds.** An item enters the model in feeds cut by :meth:`EncodecModel.encode_feed` /
   :meth:`~rvqkit.model.EncodecModel.decode_feed` from its own length (or, live, from what has arrived)
   and the engine's ``step``: regular feeds of ``step`` samples (24 kHz; one segment at 48 kHz), and one
   final feed with the rest. The feeds never depend on other items or on how the audio arrived.
2. **Slots.** The engine has ``slots`` slots. An item holds a slot from its first feed to its final one;
   a freed slot takes the next waiting item at the next step (continuous batching).
3. **Calls.** Each step, the busy slots' regular feeds that are in the same phase (same state signature
   and feed length) run as one model call; every final feed runs as a call of its own, whose shape
   depends only on that item's length. With ``rows="alone"`` every call has one row.
4. **Rows.** A batched call is padded, by repeating its first row, to a fixed number of rows: at least 2
   on CPU, where oneDNN's LSTM gives a row the same floats in any batch of two or more but other floats
   alone (measured: ``tests/test_lstm_batch.py``; convolutions are batch-invariant); ``slots`` rows on a
   GPU, so that every regular step has one shape and one kernel choice.

Exactness, therefore: an item's codes never depend on its batch-mates, its slot, when it joined or how
many slots are busy. ``rows="alone"`` (the default of :meth:`rvqkit.Codec.encode` on CPU) computes
exactly as the reference implementations do (batch of one). ``rows="batched"`` computes the LSTM with
other floats (about 1e-7), which flips a code only at a near-tie; tests/test_engine.py holds both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .framing import segment_frames
from .model import DecodeState, EncodecModel, EncodeState
from .nn.streaming import split_state, stack_states, state_signature
from .packets import CodePacket
from .precision import Precision, precision_scope

Rows = Literal["alone", "batched"]


@dataclass
class EncodedItem:
    """One item's codes ``[n_q, frames]`` (int64, CPU) and, for the 48 kHz model, scales ``[segments]``."""

    codes: torch.Tensor
    scales: torch.Tensor | None


class Job:
    """One item or live stream in the engine: its pending input, its state and its outputs not yet
    collected. :meth:`Engine.encode` / :meth:`Engine.decode` make these for lists; a live stream opens
    one with :meth:`Engine.open_encoder` / :meth:`Engine.open_decoder`, feeds it with :meth:`push` and
    :meth:`end`, and collects with :meth:`collect` after :meth:`Engine.advance`."""

    def __init__(self, model: EncodecModel, data: torch.Tensor, state: Any, ended: bool, index: int = 0):
        self.model, self.data, self.state, self.ended, self.index = model, data, state, ended, index
        self.pos = 0  # of data, fed so far
        self.done = False  # the final feed has run
        self.out: list[Any] = []

    def push(self, data: torch.Tensor) -> None:
        """Append input (audio ``[C, n]`` or codes ``[n_q, n]``) to what waits."""
        self.data = torch.cat([self.data[..., self.pos :], data], dim=-1)
        self.pos = 0

    def end(self) -> None:
        """No more input: the rest goes in the final feed."""
        self.ended = True

    def collect(self) -> list[Any]:
        """The outputs made since the last call."""
        out, self.out = self.out, []
        return out

    @property
    def waiting(self) -> int:
        return self.data.shape[-1] - self.pos

    def feed(self, step: int) -> tuple[int, bool] | None:
        raise NotImplementedError

    def take(self, n: int) -> Any:
        x = self.data[..., self.pos : self.pos + n]
        self.pos += n
        return x


class EncodeJob(Job):
    """Audio in, :class:`CodePacket` rows out."""

    def feed(self, step: int) -> tuple[int, bool] | None:
        return self.model.encode_feed(self.state, self.waiting, self.ended, step)

    @staticmethod
    def call(model: EncodecModel, state: Any, inputs: list[torch.Tensor], final: bool, to: Any) -> list[Any]:
        p = model.encode_step(to(torch.stack(inputs)), state, final)
        return [
            CodePacket(
                p.codes[r : r + 1], None if p.scales is None else p.scales[r : r + 1], p.segment_frames
            )
            for r in range(len(inputs))
        ]


class DecodeJob(Job):
    """:class:`CodePacket` in (48 kHz: whole segments with their scales), audio rows out."""

    def __init__(self, model: EncodecModel, data: torch.Tensor, state: Any, ended: bool, index: int = 0):
        super().__init__(model, data, state, ended, index)
        self.segment_frames: list[int] = []  # 48 kHz: frames of the segments still to feed
        self.scales: list[torch.Tensor] = []  # and their scales ``[1]`` each (when normalising)

    def push_packet(self, packet: CodePacket) -> None:
        """Append one packet's codes (one row), with its 48 kHz segments and scales."""
        self.push(packet.codes[0])
        self.segment_frames += packet.segment_frames
        if packet.scales is not None:
            self.scales += list(packet.scales[0].reshape(-1, 1))

    def feed(self, step: int) -> tuple[int, bool] | None:
        return self.model.decode_feed(self.segment_frames, self.waiting, self.ended, step)

    def take(self, n: int) -> CodePacket:
        codes = super().take(n)[None]
        if not self.model.segmented or n == 0:
            return CodePacket(codes)
        self.segment_frames = self.segment_frames[1:]
        scale = self.scales.pop(0)[None] if self.scales else None
        return CodePacket(codes, scale, [n])

    @staticmethod
    def call(model: EncodecModel, state: Any, inputs: list[CodePacket], final: bool, to: Any) -> list[Any]:
        first = inputs[0]
        merged = CodePacket(
            to(torch.cat([p.codes for p in inputs])),
            None if first.scales is None else to(torch.cat([p.scales for p in inputs])),  # type: ignore[misc]  # all set if the first is
            first.segment_frames,
        )
        audio = model.decode_step(merged, state, final)
        return [audio[r : r + 1] for r in range(len(inputs))]


class Engine:
    """Runs items and live streams through one model in steps (see the module docstring for the rule).

    Args:
        model: the network (on ``device``).
        device: where it runs.
        precision: float precision of the model calls (:mod:`rvqkit.precision`).
        rows: ``"alone"`` (one row per call: the references' arithmetic) or ``"batched"``.
        slots: items in flight at once (``"batched"``).
        step: samples per regular 24 kHz feed; default :meth:`EncodecModel.step_samples` for the rows
            of a call (2 s alone, 1 s batched on CPU). Codes depend on it only at near-ties of wide steps
            (see :data:`rvqkit.model.feed_rule`): live streams use short steps for latency.
    """

    def __init__(
        self,
        model: EncodecModel,
        device: torch.device,
        precision: Precision = "fp32",
        rows: Rows = "alone",
        slots: int = 1,
        step: int | None = None,
    ) -> None:
        if rows not in ("alone", "batched"):
            raise ValueError(f"rows must be 'alone' or 'batched', got {rows!r}")
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        if step is not None and step < 1:
            raise ValueError(f"step must be at least 1 sample, got {step}")
        self.model, self.device, self.precision = model, device, precision
        self.rows: Rows = rows
        self.slots = 1 if rows == "alone" else slots
        self.step = step if step is not None else model.step_samples(1 if rows == "alone" else slots)
        self.calls = 0  # model calls made (for tests and benchmarks)

    @property
    def min_rows(self) -> int:
        """Rows of every batched call: 1 alone; ``slots`` on a GPU (one shape); at least 2 on CPU."""
        if self.rows == "alone":
            return 1
        return self.slots if self.device.type == "cuda" else 2

    # -- lists of items ----------------------------------------------------------------------------------
    def encode(self, items: Sequence[torch.Tensor], n_q: int) -> list[EncodedItem]:
        """Codes of each item ``[C, T_i]`` (model rate and channels) at ``n_q`` codebooks."""
        jobs = self._run(
            len(items),
            lambda i: EncodeJob(self.model, items[i], self.model.init_encode_state(1, n_q), True, i),
        )
        out = []
        for job in jobs:
            packets: list[CodePacket] = job.out
            codes = torch.cat([p.codes[0] for p in packets], dim=-1).cpu()
            scales = [p.scales[0] for p in packets if p.scales is not None]
            out.append(EncodedItem(codes, torch.cat(scales).cpu() if scales else None))
        return out

    def decode(
        self, codes: Sequence[torch.Tensor], scales: Sequence[torch.Tensor | None], lengths: Sequence[int]
    ) -> list[torch.Tensor]:
        """Audio ``[C, length_i]`` (CPU) of each item from its codes ``[n_q, frames_i]`` (and 48 kHz scales
        ``[segments_i]``); ``lengths`` in samples."""

        def start(i: int) -> Job:
            job = DecodeJob(self.model, codes[i], self.model.init_decode_state(1), True, i)
            if self.model.segmented:
                job.segment_frames = segment_frames(self.model.config, lengths[i])
                s = scales[i]
                job.scales = [] if s is None else list(s.reshape(-1, 1))
            return job

        jobs = self._run(len(codes), start)
        return [torch.cat([a[0] for a in job.out], dim=-1)[:, : lengths[job.index]].cpu() for job in jobs]

    def _run(self, count: int, start: Callable[[int], Job]) -> list[Job]:
        """Continuous batching over ``count`` items: slots take waiting items as they free; each step
        runs the busy slots' feeds (:meth:`advance`, one feed each)."""
        waiting: deque[int] = deque(range(count))
        busy: list[Job] = []
        finished: list[Job] = []
        while waiting or busy:
            while waiting and len(busy) < self.slots:
                busy.append(start(waiting.popleft()))
            self.advance(busy, once=True)
            finished += [j for j in busy if j.done]
            busy = [j for j in busy if not j.done]
        return sorted(finished, key=lambda j: j.index)

    # -- live streams ------------------------------------------------------------------------------------
    def open_encoder(self, n_q: int) -> EncodeJob:
        """A live encode stream: :meth:`Job.push` audio ``[C, n]``, :meth:`Job.end`, :meth:`advance`,
        then :meth:`Job.collect` its :class:`CodePacket` s (one row each)."""
        cfg = self.model.config
        return EncodeJob(
            self.model, torch.zeros(cfg.audio_channels, 0), self.model.init_encode_state(1, n_q), False
        )

    def open_decoder(self, n_q: int) -> DecodeJob:
        """A live decode stream: :meth:`DecodeJob.push_packet` codes, :meth:`Job.end`, :meth:`advance`,
        then :meth:`Job.collect` audio ``[1, C, n]`` pieces."""
        return DecodeJob(
            self.model, torch.zeros(n_q, 0, dtype=torch.long), self.model.init_decode_state(1), False
        )

    # -- the step ------------------------------------------------------------------------------------------
    def advance(self, jobs: Sequence[Job], once: bool = False) -> None:
        """Run every feed the jobs can take now (``once``: at most one each), in steps: each step groups
        the jobs' next feeds by the rule of the module docstring and makes one call per group."""
        with torch.inference_mode(), precision_scope(self.precision, self.device):
            while True:
                groups: dict[Any, list[tuple[Job, int]]] = {}
                finals: list[tuple[Job, int]] = []
                for job in jobs:
                    got = None if job.done else job.feed(self.step)
                    if got is None:
                        continue
                    n, final = got
                    if final:
                        finals.append((job, n))
                    else:  # alone: a group per job; batched: a group per phase and kind
                        key = id(job) if self.rows == "alone" else (type(job), state_signature(job.state), n)
                        groups.setdefault(key, []).append((job, n))
                if not groups and not finals:
                    return
                for group in groups.values():
                    self._call(group, final=False)
                for job_n in finals:
                    self._call([job_n], final=True)
                    job_n[0].done = True
                if once:
                    return

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the engine's device (from pinned memory without blocking on a GPU)."""
        if self.device.type == "cuda" and x.device.type == "cpu":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)

    def _call(self, group: list[tuple[Job, int]], final: bool) -> None:
        """One model call for ``group``'s feeds, padded to :attr:`min_rows` by repeating the first row."""
        inputs = [job.take(n) for job, n in group]
        pad = max(0, self.min_rows - len(group))
        kind = type(group[0][0])
        self.calls += 1
        if len(group) == 1 and pad == 0:
            job = group[0][0]
            job.out += kind.call(self.model, job.state, inputs, final, self._to_device)  # type: ignore[attr-defined]  # Job subclasses
            return
        rows = inputs + [inputs[0]] * pad
        stacked = stack_states([job.state for job, _ in group] + [group[0][0].state] * pad)
        outs = kind.call(self.model, stacked, rows, final, self._to_device)  # type: ignore[attr-defined]  # Job subclasses
        for (job, _), st, out in zip(group, split_state(stacked, [1] * len(rows)), outs, strict=False):
            job.state = st
            job.out.append(out)


__all__ = ["DecodeJob", "DecodeState", "EncodeJob", "EncodeState", "EncodedItem", "Engine", "Job", "Rows"]
