"""Load benchmark of the codec server's streaming (a script, not a test).

N concurrent WebSocket encode streams on loopback, each sending real-time-paced 80 ms chunks of its own
test signal. For every frame: latency from the moment its last sample was sent (or, for the first
frames, the sample that completes the encoder's start-up, 7 frames = 2240 samples at 24 kHz) to the
moment its codes arrive back at the client. (The server feeds its engine in 80 ms steps; the chunks here
are aligned to them, so that rule adds no wait.) Also: frames dropped (expected − received), streams
refused or closed, and each stream's codes against two references: offline encoding of its whole signal
through an engine of the server's configuration (``rvqkit.server.sockets.encode_offline``: must be
identical, bit for bit), and ``codec.encode`` (identical except near-tie frames, ≤ max(1, frames // 100),
as tests/test_stream.py counts).

The server runs in its own process (uvicorn), once with cross-stream batching and once without; N
grows until p99 latency passes the limit or a stream falls behind. A stream is "real time" at N when
no frame is dropped, no stream errs, and the p99 latency over all frames of all streams is < 100 ms.
Every row gives the machine's load average (other processes share its cores).

    python benchmarks/server_load.py --random-model                  # random weights (same compute)
    python benchmarks/server_load.py --model facebook/encodec_24khz  # real weights if cached
    python benchmarks/server_load.py --random-model --streams 1 8 16 32 --seconds 6 --markdown
    python benchmarks/server_load.py --random-model --engine-only --streams 1 8 16 24 32   # no server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_STREAMS = 1024  # the server's stream limit here (the engine's slots)


# -- the model ---------------------------------------------------------------------------------------------
def random_codec(seed: int = 0):
    """A 24 kHz codec with deterministic random weights (the same in every process) and codebooks filled
    from its own embeddings, so that codes vary as with trained weights. Compute cost equals the real model's."""
    from rvqkit import ENCODEC_24KHZ, Codec
    from rvqkit.model import EncodecModel

    torch.manual_seed(seed)
    model = EncodecModel(ENCODEC_24KHZ).eval()
    with torch.inference_mode():
        x = torch.from_numpy(test_signal(4 * 24000, seed + 1))[None]
        residual = model.encoder(x)[0].t()  # [frames, D]
        gen = torch.Generator().manual_seed(seed)
        for k in range(model.quantizer.codebooks.shape[0]):
            pick = torch.randint(0, residual.shape[0], (model.quantizer.codebooks.shape[1],), generator=gen)
            book = residual[pick] + 0.1 * residual.std() * torch.randn(residual[pick].shape, generator=gen)
            model.quantizer.codebooks[k] = book
            residual = residual - book[torch.cdist(residual, book).argmin(dim=1)]
    return Codec(model, "cpu", weights_sha256=f"random-seed-{seed}")


def server_hub(codec, batching: bool):
    """A stream hub (and its engine) of the configuration :func:`serve` gives the server: fp32, 1024
    slots, 80 ms feeds, batched or not."""
    from rvqkit.server import ServerSettings
    from rvqkit.server.gate import ModelGate
    from rvqkit.server.sockets import StreamHub

    return StreamHub(codec, ServerSettings(max_streams=MAX_STREAMS, batching=batching), ModelGate())


def advance(hub, jobs) -> None:
    """One step of ``jobs`` as the hub runs it: ``engine.advance``, at most ``rows_per_call`` jobs a call."""
    cap = hub.rows_per_call() or len(jobs)
    for k in range(0, len(jobs), cap):
        hub.engine.advance(jobs[k : k + cap])


def exact_codes(codec, batching: bool, signals: list[np.ndarray], bandwidth: float) -> list[np.ndarray]:
    """Each signal's codes as the server's engine gives them offline (what
    ``rvqkit.server.sockets.encode_offline`` gives), the signals run together as the server's hub runs
    streams (at most ``rows_per_call`` per call): an item's codes do not depend on its batch-mates, so
    this is exact and cheaper than one signal at a time."""
    from rvqkit.server.sockets import merge_packets, open_encoder

    hub = server_hub(codec, batching)
    n_q = codec.n_q_for(bandwidth)
    jobs = [open_encoder(hub.engine, n_q) for _ in signals]
    for job, x in zip(jobs, signals, strict=True):
        job.push(torch.from_numpy(x))
        job.end()
    advance(hub, jobs)
    return [merge_packets(job.collect(), n_q).codes[0].numpy() for job in jobs]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process ``pid`` has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    """The 1-minute load average (what else runs on the machine's cores)."""
    return os.getloadavg()[0]


def load_codec(args):
    if args.random_model:
        return random_codec()
    from rvqkit import Codec

    return Codec.from_pretrained(args.model)


def test_signal(n: int, seed: int) -> np.ndarray:
    """Tones, a chirp and noise, ``[1, n]`` float32 at 24 kHz, peak about 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 24000
    f0 = 110 * (1 + rng.random())
    x = 0.25 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * (200 + 100 * t) * t)
    x += 0.05 * rng.standard_normal(n)
    return x[None].astype(np.float32)


# -- the server process ------------------------------------------------------------------------------------
def serve(args) -> None:
    import uvicorn

    from rvqkit import tune_allocator
    from rvqkit.server import ServerSettings, create_app

    tune_allocator()  # as `rvqkit serve` does
    torch.set_num_threads(args.threads)
    settings = ServerSettings(
        max_streams=MAX_STREAMS, idle_timeout_s=60, batching=args.batching, max_backlog_s=args.max_backlog
    )
    uvicorn.run(create_app(load_codec(args), settings), host="127.0.0.1", port=args.port, log_level="warning")


def start_server(args, batching: bool) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--threads", str(args.threads)]
    cmd += ["--random-model"] if args.random_model else ["--model", args.model]
    cmd += ["--batching"] if batching else []
    cmd += ["--max-backlog", str(args.max_backlog)]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/info", timeout=2) as r:
                info = json.load(r)
            assert info["batching"] == batching, f"server batching is {info['batching']}, wanted {batching}"
            return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start")


def server_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/stats", timeout=10) as r:
        return json.load(r)


# -- the clients -------------------------------------------------------------------------------------------
@dataclass
class StreamResult:
    latencies: list[float] = field(default_factory=list)  # seconds, one per frame
    codes: list[np.ndarray] = field(default_factory=list)
    error: str | None = None
    frames: int = 0
    late_sends: int = 0  # chunks the client itself sent > 20 ms late (client overload)


async def one_stream(port: int, x: np.ndarray, args, delay: float) -> StreamResult:
    import websockets

    res = StreamResult()
    chunk = int(0.08 * 24000)
    hop, startup = 320, 7 * 320
    sent_at: list[tuple[int, float]] = []  # (samples sent so far, time) after each chunk

    def available(frame: int) -> float:
        need = max((frame + 1) * hop, startup)
        for n, t in sent_at:
            if n >= need:
                return t
        return sent_at[-1][1]  # frames completed by flush: the end message

    await asyncio.sleep(delay)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/stream/encode", max_size=2**24) as ws:
            start = {"sample_rate": 24000, "channels": 1, "format": "f32le", "bandwidth": args.bandwidth}
            await ws.send(json.dumps(start))
            ready = json.loads(await ws.recv())
            if ready.get("type") != "ready":
                res.error = ready.get("error", "no ready")
                return res

            async def receive() -> None:
                while True:
                    msg = json.loads(await ws.recv())
                    now = time.perf_counter()
                    if msg["type"] == "codes":
                        c = np.asarray(msg["codes"], dtype=np.int64)
                        res.codes.append(c)
                        for f in range(msg["start"], msg["start"] + c.shape[-1]):
                            res.latencies.append(now - available(f))
                        res.frames += c.shape[-1]
                    elif msg["type"] == "done":
                        return
                    else:
                        res.error = f"{msg.get('error')}: {msg.get('message')}"
                        return

            receiver = asyncio.ensure_future(receive())
            t0 = time.perf_counter()
            for i, pos in enumerate(range(0, x.shape[-1], chunk)):
                target = t0 + i * 0.08
                now = time.perf_counter()
                if now < target:
                    await asyncio.sleep(target - now)
                elif now - target > 0.02:
                    res.late_sends += 1
                piece = x[0, pos : pos + chunk]
                await ws.send(piece.astype("<f4").tobytes())
                sent_at.append((pos + piece.shape[-1], time.perf_counter()))
            await ws.send(json.dumps({"type": "end"}))
            sent_at.append((x.shape[-1] + hop, time.perf_counter()))
            await asyncio.wait_for(receiver, timeout=120)
    except Exception as e:  # refused, closed, timed out: counted, not fatal
        res.error = res.error or f"{type(e).__name__}: {e}"
    return res


async def run_level(port: int, n: int, signals: list[np.ndarray], args) -> list[StreamResult]:
    rng = np.random.default_rng(n)
    delays = rng.uniform(0, 0.08, n)  # streams start at random points of the 80 ms cycle
    return await asyncio.gather(*(one_stream(port, signals[i], args, delays[i]) for i in range(n)))


def evaluate(results: list[StreamResult], exact, offline) -> dict:
    """Latency, drops and errors, and how many streams' codes equal ``exact`` (the engine's offline
    codes) bit for bit and are within the near-tie bound of ``offline`` (``codec.encode``)."""
    lat = np.concatenate([np.asarray(r.latencies) for r in results if r.latencies] or [np.zeros(0)])
    expected = sum(o.shape[-1] for o in offline[: len(results)])
    received = sum(r.frames for r in results)
    equal = within = 0
    for r, e, o in zip(results, exact, offline, strict=False):
        if r.error or not r.codes:
            continue
        c = np.concatenate(r.codes, axis=-1)
        equal += c.shape == e.shape and bool((c == e).all())
        within += c.shape == o.shape and int((c != o).any(axis=0).sum()) <= max(1, o.shape[-1] // 100)
    return {
        "median_ms": float(np.median(lat) * 1000) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99) * 1000) if lat.size else float("nan"),
        "dropped": expected - received,
        "errors": sum(r.error is not None for r in results),
        "error_kinds": sorted({r.error.split(":")[0] for r in results if r.error}),
        "exact": equal,
        "within_bound": within,
        "late_sends": sum(r.late_sends for r in results),
    }


def engine_only(args) -> None:
    """No server: time one 80 ms step of B live encode jobs as the server's hub runs it (``engine.advance``
    over all of them, at most ``rows_per_call`` a call) on the batched engine, and on the ``rows="alone"``
    engine (one call per stream: the server with batching off), with the model calls each makes per step. Wall time, and this process's CPU time
    (which other processes on the cores inflate less)."""
    from rvqkit.server.sockets import STEP_SAMPLES, open_encoder

    torch.set_num_threads(args.threads)
    codec = load_codec(args)
    n_q = codec.n_q_for(args.bandwidth)
    chunk, steps = STEP_SAMPLES, 10
    print(
        f"# torch threads {args.threads}, {args.bandwidth:g} kbps, {steps} steps of 80 ms after 3 warm-up steps"
    )
    print(
        "| streams | batched ms per 80 ms step (CPU ms) | calls | one by one ms (CPU ms) | calls "
        "| batched real-time factor | load avg |"
    )
    print("|---|---|---|---|---|---|---|")
    for b in sorted(args.streams):
        xs = [torch.from_numpy(test_signal(chunk * (steps + 3), 200 + i)) for i in range(b)]
        wall, cpu, calls = {}, {}, {}
        for batching in (True, False):
            hub = server_hub(codec, batching)
            engine = hub.engine
            jobs = [open_encoder(engine, n_q) for _ in range(b)]
            for k in range(steps + 3):
                if k == 3:  # past the start-up
                    t, p, c = time.perf_counter(), time.process_time(), engine.calls
                for job, x in zip(jobs, xs, strict=True):
                    job.push(x[:, k * chunk : (k + 1) * chunk])
                advance(hub, jobs)
                for job in jobs:
                    job.collect()
            wall[batching] = (time.perf_counter() - t) / steps * 1000
            cpu[batching] = (time.process_time() - p) / steps * 1000
            calls[batching] = (engine.calls - c) / steps
        print(
            f"| {b} | {wall[True]:.1f} ({cpu[True]:.1f}) | {calls[True]:g} | {wall[False]:.1f} "
            f"({cpu[False]:.1f}) | {calls[False]:g} | {80 / wall[True]:.2f} | {load_average():.1f} |",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="facebook/encodec_24khz")
    p.add_argument("--random-model", action="store_true", help="deterministic random weights (no download)")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 12, 16, 24, 32, 48, 64])
    p.add_argument("--seconds", type=float, default=6.0, help="audio per stream")
    p.add_argument("--bandwidth", type=float, default=6.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    p.add_argument(
        "--max-backlog", type=float, default=2.0, help="the server closes a stream this far behind, s"
    )
    p.add_argument("--limit-ms", type=float, default=100.0, help="p99 latency limit")
    p.add_argument("--modes", nargs="+", default=["batched", "unbatched"], choices=["batched", "unbatched"])
    p.add_argument("--keep-going", action="store_true", help="measure every N even after one fails")
    p.add_argument("--markdown", action="store_true")
    p.add_argument(
        "--engine-only", action="store_true", help="time engine.advance over B jobs vs one by one, no server"
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--batching", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        return serve(args)
    if args.engine_only:
        return engine_only(args)

    torch.set_num_threads(1)  # the client process: offline reference encodes only, after the runs
    n_max = max(args.streams)
    n_samples = int(args.seconds * 24000)
    signals = [test_signal(n_samples, seed=100 + i) for i in range(n_max)]
    codec = load_codec(args)
    offline = [codec.encode(s, 24000, bandwidth=args.bandwidth).codes[0].numpy() for s in signals]
    rows = []
    for mode in args.modes:
        exact = exact_codes(codec, mode == "batched", signals, args.bandwidth)
        proc, port = start_server(args, batching=mode == "batched")
        try:
            for n in sorted(args.streams):
                before = server_stats(port)
                load, cpu0, t0 = load_average(), cpu_seconds(proc.pid), time.perf_counter()
                results = asyncio.run(run_level(port, n, signals, args))
                server_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - t0)
                after = server_stats(port)
                row = {"mode": mode, "streams": n, **evaluate(results, exact, offline)}
                row["load_avg"] = max(load, load_average())
                row["server_cores"] = server_cpu  # CPU seconds per second: 1.0 = one core busy
                steps = max(1, after["steps"] - before["steps"])
                row["step_ms_mean"] = (
                    1000 * (after["step_seconds_total"] - before["step_seconds_total"]) / steps
                )
                row["streams_per_step"] = (after["stream_steps_total"] - before["stream_steps_total"]) / steps
                row["real_time"] = (
                    row["p99_ms"] < args.limit_ms and row["dropped"] == 0 and row["errors"] == 0
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
                if not row["real_time"] and not args.keep_going:
                    break
        finally:
            proc.terminate()
            proc.wait(10)
    best = {
        m: max([r["streams"] for r in rows if r["mode"] == m and r["real_time"]], default=0)
        for m in args.modes
    }
    print(json.dumps({"largest_real_time_N": best}))
    if args.markdown:
        print(
            "\n| mode | N | median ms | p99 ms | dropped | errors | codes exact (engine) / within bound "
            "(codec.encode) | server step ms (mean) | streams per step | server cores busy | late sends "
            "| load avg | real time |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['mode']} | {r['streams']} | {r['median_ms']:.0f} | {r['p99_ms']:.0f} | {r['dropped']} | "
                f"{r['errors']} | {r['exact']} / {r['within_bound']} of {r['streams']} | "
                f"{r['step_ms_mean']:.1f} | {r['streams_per_step']:.2f} | {r['server_cores']:.2f} | "
                f"{r['late_sends']} | "
                f"{r['load_avg']:.1f} | {'yes' if r['real_time'] else 'no'} {' '.join(r['error_kinds'])} |"
            )


if __name__ == "__main__":
    main()
