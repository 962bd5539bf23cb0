"""Issue 20's abuse classes against a real ``rvqkit serve`` (default limits, random weights, 127.0.0.1
only): per class the input's size, the answer, the time to it, the server's peak RSS growth while it was in
flight, and the worst and median ``/v1/health`` latency meanwhile (polled every 50 ms).

    python benchmarks/server_abuse.py            # about a minute; prints a Markdown table

Every loop is bounded in count and time; nothing leaves the loopback interface.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' server harness
from server_helpers import ServerProcess, Watch, cancel_after, post, socket_error  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

SR = 24000


def wav(x: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x.T, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def meta(n_q: int = 2) -> np.ndarray:
    m = {"format": "rvqkit-codes", "version": 1, "model": "encodec_24khz", "weights_sha256": None}
    m |= {"sample_rate": SR, "channels": 1, "bandwidth": 1.5, "n_q": n_q}
    return np.frombuffer(json.dumps(m).encode(), dtype=np.uint8)


def npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def outcome(status, body) -> str:
    return f"{status} {body['error']}" if isinstance(body, dict) and "error" in body else str(status)


# -- the abuses: each returns (input bytes, what the server answered) ----------------------------------------
def stream_rate_1(s):
    start = json.dumps({"sample_rate": 1, "channels": 1})
    with connect(s.ws_url + "/v1/stream/encode") as ws:
        ws.send(start)
        return len(start), "close " + socket_error(ws).get("error", "?")


def stream_4khz_1mib(s):
    sent = 0
    with connect(s.ws_url + "/v1/stream/encode", max_size=2**24) as ws:
        ws.send(json.dumps({"sample_rate": 4000, "channels": 1}))
        ws.recv(timeout=10)
        with contextlib.suppress(Exception):
            for _ in range(32):
                ws.send(np.zeros(262_000, "<f4").tobytes())
                sent += 262_000 * 4
        return sent, "close " + socket_error(ws).get("error", "?")


def decode_socket_no_read(s):
    msg = json.dumps({"type": "codes", "codes": [[1] * 75] * 8})  # 1 s of codes, 8 codebooks
    sent = 0
    with connect(s.ws_url + "/v1/stream/decode", max_size=2**24) as ws:
        ws.send(json.dumps({"format": "f32le"}))
        ws.recv(timeout=10)
        with contextlib.suppress(Exception):
            for _ in range(600):  # 600 s of codes, PCM never read while sending
                ws.send(msg)
                sent += len(msg)
        return sent, "close " + socket_error(ws).get("error", "?")


def slowloris(s):
    with connect(s.ws_url + "/v1/stream/encode") as ws:
        ws.send(json.dumps({"sample_rate": SR, "channels": 1}))
        ws.recv(timeout=10)
        sent = 0
        with contextlib.suppress(Exception):
            for _ in range(40):
                ws.send(b"\0\0\0\0")
                sent += 4
                time.sleep(0.5)
                with contextlib.suppress(TimeoutError):
                    m = ws.recv(timeout=0.01)
                    if isinstance(m, str) and json.loads(m)["type"] == "error":
                        return sent, "close " + json.loads(m)["error"]
        return sent, "close " + socket_error(ws).get("error", "?")


def upload(path, data, **kw):
    def run(s):
        status, body, _ = post(s, path, data, **kw)
        return len(data), outcome(status, body)

    return run


def zip_bomb() -> bytes:
    import zipfile

    frames = 500_000_000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("codes.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<i2", "fortran_order": False, "shape": (1, 2, frames)}
            )
            for _ in range(4):
                f.write(b"\0" * (1 << 20))
        for name, arr in {
            "lengths": np.array([frames * 320]),
            "frame_lengths": np.array([frames]),
            "meta": meta(),
        }.items():
            with z.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, arr)
    return buf.getvalue()


def flat_json(nbytes: int) -> bytes:
    n = nbytes // 3
    return json.dumps({"model": "encodec_24khz", "codes": [0] * n}).encode()


def host_evil(s):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(s.url + "/v1/info", headers={"Host": "evil.example.com"})
    try:
        urllib.request.urlopen(req, timeout=5)
        return 0, "200"
    except urllib.error.HTTPError as e:
        return 0, outcome(e.code, json.loads(e.read()))


def origin_evil(s):
    try:
        with connect(s.ws_url + "/v1/stream/encode", origin="https://evil.example"):
            return 0, "accepted"
    except Exception as e:
        return 0, f"handshake refused ({getattr(getattr(e, 'response', None), 'status_code', e)})"


def long_job_503_and_stream(s, long_wav):
    """A 60 s REST encode; meanwhile a second request and a live stream's first codes."""
    done = {}
    job = threading.Thread(target=lambda: done.update(r=post(s, "/v1/encode", long_wav, timeout=300)))
    job.start()
    deadline = time.monotonic() + 10
    while s.stats()["jobs"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    answers = []
    for _ in range(4):  # max_jobs (4) admitted at once: the 4th extra request must be refused
        t = threading.Thread(target=lambda: answers.append(post(s, "/v1/encode", wav(np.zeros((1, SR)), SR))))
        t.start()
    time.sleep(0.3)
    status, body, headers = post(s, "/v1/encode", wav(np.zeros((1, SR)), SR))
    with connect(s.ws_url + "/v1/stream/encode") as ws:
        ws.send(json.dumps({"sample_rate": SR, "channels": 1}))
        ws.recv(timeout=10)
        t = time.monotonic()
        ws.send(np.zeros(SR, "<f4").tobytes())
        ws.recv(timeout=60)
        first = time.monotonic() - t
    job.join(300)
    return len(long_wav), (
        f"{outcome(status, body)} Retry-After {headers.get('retry-after')}; stream's first codes after "
        f"{first * 1000:.0f} ms; job {done['r'][0]}"
    )


def cancelled(s, long_wav):
    before = s.stats()["jobs_cancelled"]
    cancel_after(s, long_wav, 0.5)
    deadline = time.monotonic() + 20
    while s.stats()["jobs"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(long_wav), f"jobs cancelled +{s.stats()['jobs_cancelled'] - before}, queue empty"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random-24khz")
    args = p.parse_args()
    long_wav = wav(0.1 * np.random.default_rng(0).standard_normal((1, 60 * SR)).astype(np.float32), SR)
    buf = io.BytesIO()  # 600 samples at 1 Hz: written at 8 kHz, then the header's rate patched
    sf.write(buf, np.zeros(600, np.float32), 8000, format="WAV", subtype="PCM_16")
    one_hz = bytearray(buf.getvalue())
    one_hz[24:28] = (1).to_bytes(4, "little")  # sample rate 1 Hz
    one_hz[28:32] = (2).to_bytes(4, "little")  # byte rate
    cases = [
        ("stream encode, sample_rate 1", stream_rate_1),
        ("stream encode, 4 kHz, 1 MiB messages", stream_4khz_1mib),
        ("REST encode, 1 Hz WAV (600 s)", upload("/v1/encode", bytes(one_hz))),
        (".npz zip bomb (2 GB declared)", upload("/v1/decode", zip_bomb())),
        (
            ".npz lengths=[10**12]",
            upload(
                "/v1/decode",
                npz(
                    codes=np.zeros((1, 2, 10), np.int16),
                    lengths=np.array([10**12]),
                    frame_lengths=np.array([10]),
                    meta=meta(),
                ),
            ),
        ),
        (
            ".npz unused 100 MB member",
            upload(
                "/v1/decode",
                npz(
                    codes=np.zeros((1, 2, 10), np.int16),
                    lengths=np.array([3200]),
                    frame_lengths=np.array([10]),
                    meta=meta(),
                    junk=np.zeros(100_000_000, np.uint8),
                ),
            ),
        ),
        ("JSON flat list, 2 MB", upload("/v1/decode/json", flat_json(2_000_000), json_body=True)),
        ("JSON flat list, 6 MB", upload("/v1/decode/json", flat_json(6_000_000), json_body=True)),
        ("decode socket, 600 s of codes, PCM unread", decode_socket_no_read),
        ("slow stream, 4 bytes / 0.5 s", slowloris),
        ("Host: evil.example.com", host_evil),
        ("WebSocket Origin: https://evil.example", origin_evil),
        ("60 s REST job + 5 more requests + a stream", lambda s: long_job_503_and_stream(s, long_wav)),
        ("60 s REST job, client hangs up after 0.5 s", lambda s: cancelled(s, long_wav)),
    ]
    server = ServerProcess(args.model)
    try:
        print(f"server RSS at start: {server.rss_mb():.0f} MB\n")
        print(
            "| abuse | input bytes | answer | time to answer s | peak RSS growth MB | RSS growth after MB | health worst / median ms |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, fn in cases:
            lat = []
            w = Watch(server)
            orig = server.health_ms

            def timed(timeout=5.0, orig=orig, lat=lat):
                ms = orig(timeout)
                lat.append(ms)
                return ms

            server.health_ms = timed
            with w:
                t = time.monotonic()
                size, answer = fn(server)
                took = time.monotonic() - t
            server.health_ms = orig
            med = float(np.median(lat)) if lat else float("nan")
            print(
                f"| {name} | {size} | {answer} | {took:.2f} | {w.peak_growth_mb:.0f} | {w.end_growth_mb:.0f} | "
                f"{w.worst_health_ms:.0f} / {med:.0f} |",
                flush=True,
            )
    finally:
        server.close()


if __name__ == "__main__":
    main()
