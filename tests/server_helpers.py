"""Helpers shared by the server tests: WAV bytes, and an app on a random-weight model."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from fastapi.testclient import TestClient

BASE_URL = "http://localhost"  # a trusted host of the default settings (TestClient's own is "testserver")


class LocalClient(TestClient):
    """A TestClient whose requests and sockets carry ``Host: localhost``, as a browser on this machine
    sends (TestClient's own ``testserver`` is not a trusted host; its sockets ignore ``base_url``)."""

    def websocket_connect(self, url: str, *args, **kwargs):
        if url.startswith("/"):
            url = "ws://localhost" + url
        return super().websocket_connect(url, *args, **kwargs)


def local_client(app, **kwargs) -> LocalClient:
    return LocalClient(app, base_url=BASE_URL, **kwargs)


def wav_bytes(x: np.ndarray, sr: int, subtype: str = "FLOAT") -> bytes:
    """``[channels, samples]`` float audio as WAV bytes (32-bit float by default: lossless)."""
    buf = io.BytesIO()
    sf.write(buf, x.T, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return x.T, sr


def mismatched_frames(a, b) -> int:
    """Frames whose codes differ anywhere (as tests/test_stream.py counts them)."""
    return int((a != b).any(dim=-2).sum())


# -- a real server in a subprocess (loopback only) ---------------------------------------------------------------
class ServerProcess:
    """``rvqkit serve`` on 127.0.0.1 in a subprocess, with its RSS and health latency at hand."""

    def __init__(self, model: str, *flags: str, timeout: float = 120.0) -> None:
        import socket
        import subprocess
        import sys
        import time

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "rvqkit", "serve", "--model", model, "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--threads", "1", *flags]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rvqkit serve exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                self.health_ms()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.2)

    def rss_mb(self) -> float:
        """The server's resident memory now, MB (VmRSS from /proc)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kb / 1024

    def health_ms(self, timeout: float = 5.0) -> float:
        """Milliseconds for one GET /v1/health (a fresh connection, as a monitor makes)."""
        import time
        import urllib.request

        t = time.perf_counter()
        with urllib.request.urlopen(self.url + "/v1/health", timeout=timeout) as r:
            r.read()
        return (time.perf_counter() - t) * 1000

    def stats(self) -> dict:
        import json
        import urllib.request

        with urllib.request.urlopen(self.url + "/v1/stats", timeout=5) as r:
            return json.load(r)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait(10)


class Watch:
    """While its block runs: /v1/health latency every 50 ms (worst, ms) and the server's peak RSS growth
    (MB over the value at the start)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.worst_health_ms = 0.0
        self.peak_growth_mb = 0.0
        self.samples = 0

    def __enter__(self) -> Watch:
        import threading

        self.start_mb = self.server.rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ms = self.server.health_ms(timeout=10)
            except OSError:
                ms = 10_000.0
            self.worst_health_ms = max(self.worst_health_ms, ms)
            self.peak_growth_mb = max(self.peak_growth_mb, self.server.rss_mb() - self.start_mb)
            self.samples += 1
            self._stop.wait(0.05)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)
        self.end_growth_mb = self.server.rss_mb() - self.start_mb


# -- abusive clients (each returns what the server answered, and the input's size in bytes) -------------------
def _multipart(data: bytes, name: str = "x.wav") -> tuple[bytes, str]:
    boundary = "rvqkitabuse"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def post(
    server: ServerProcess, path: str, data: bytes, *, json_body: bool = False, headers=None, timeout=60.0
):
    """(status, JSON or None, lower-case headers) of a POST of ``data`` as a file upload (or as a JSON
    body). A server that answers before the body is all sent (413 from Content-Length) and closes is read
    all the same."""
    import contextlib
    import http.client
    import json

    body, ctype = (data, "application/json") if json_body else _multipart(data)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.putrequest("POST", path)
        for k, v in {"content-type": ctype, "content-length": str(len(body)), **(headers or {})}.items():
            conn.putheader(k, v)
        conn.endheaders()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send(body)  # an early answer leaves the rest unsent; it is read below
        r = conn.getresponse()
        raw = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        try:
            return r.status, json.loads(raw), hdrs
        except ValueError:
            return r.status, None, hdrs
    finally:
        conn.close()


def socket_error(ws, limit_s: float = 30.0) -> dict:
    """Read a socket until its error message (skipping codes and PCM); {} if it closes without one."""
    import json
    import time

    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(msg, str) and json.loads(msg).get("type") == "error":
                return json.loads(msg)
    except Exception:
        return {}
    return {}


def cancel_after(server: ServerProcess, data: bytes, seconds: float) -> None:
    """POST ``data`` to /v1/encode over a raw socket and hang up after ``seconds`` (a closed browser tab)."""
    import socket
    import time

    body, ctype = _multipart(data)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        head = (
            f"POST /v1/encode HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        s.sendall(head.encode() + body)
        time.sleep(seconds)
