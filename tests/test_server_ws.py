"""WebSocket streaming of the codec server: streamed codes equal offline ``encode`` for random chunk
sizes (compared as tests/test_stream.py does at 24 kHz; bit-exact at 48 kHz), the decode socket equals
offline ``decode``, the scheduler batches streams into shared calls, and the limits refuse clearly."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from conftest import make_signal
from server_helpers import local_client, mismatched_frames
from starlette.websockets import WebSocketDisconnect

import rvqkit.stream as stream_mod
from rvqkit.server import ServerSettings, create_app
from rvqkit.server.sockets import _Stream, round_sizes

SR = 24000


@pytest.fixture(scope="module")
def client24(codec24):
    with local_client(create_app(codec24)) as c:
        yield c


def stream_encode(client, x: np.ndarray, sr: int, bandwidth: float, sizes, fmt: str = "f32le"):
    """Send ``x`` ``[channels, samples]`` as PCM byte chunks of the given sizes; return the codes,
    scales and messages received."""
    dtype = "<f4" if fmt == "f32le" else "<i2"
    pcm = (x.T if fmt == "f32le" else np.round(x.T * 32767)).astype(dtype).tobytes()
    with client.websocket_connect("/v1/stream/encode") as ws:
        start = {"sample_rate": sr, "channels": x.shape[0], "format": fmt, "bandwidth": bandwidth}
        ws.send_text(json.dumps(start))
        ready = ws.receive_json()
        assert ready["type"] == "ready", ready
        pos = 0
        for n in sizes:
            if pos >= len(pcm):
                break
            ws.send_bytes(pcm[pos : pos + n])
            pos += n
        if pos < len(pcm):
            ws.send_bytes(pcm[pos:])
        ws.send_text(json.dumps({"type": "end"}))
        msgs = []
        while True:
            m = ws.receive_json()
            msgs.append(m)
            if m["type"] != "codes":
                break
    assert msgs[-1]["type"] == "done", msgs[-1]
    codes = torch.cat([torch.tensor(m["codes"]) for m in msgs[:-1]], dim=-1)
    starts = [m["start"] for m in msgs[:-1]]
    assert starts == list(np.cumsum([0] + [len(m["codes"][0]) for m in msgs[:-2]]))
    scales = [s for m in msgs[:-1] for s in (m["scales"] or [])]
    return codes, scales, msgs


def random_sizes(seed: int, high: int):
    rng = np.random.default_rng(seed)
    while True:
        yield int(rng.integers(1, high))


@pytest.mark.parametrize("seed, seconds", [(0, 1.5), (1, 0.6)])
def test_encode_socket_random_chunks_equals_offline(client24, codec24, seed, seconds):
    x = make_signal(int(seconds * SR) + 57, 1, SR, seed=seed)
    offline = codec24.encode(x, SR, bandwidth=6.0).codes[0]
    # byte chunks of any size: they split samples, the server carries the partial sample over
    codes, _, msgs = stream_encode(client24, x, SR, 6.0, random_sizes(seed, 12000))
    assert codes.shape == offline.shape
    assert mismatched_frames(codes, offline) <= max(1, offline.shape[-1] // 100)  # see tests/test_stream.py
    assert msgs[-1] == {"type": "done", "frames": offline.shape[-1], "samples": x.shape[-1]}


def test_encode_socket_s16le(client24, codec24):
    x = make_signal(SR // 2, 1, SR, seed=4)
    q = (np.round(x * 32767) / 32768).astype(np.float32)  # what the server reads from s16le
    offline = codec24.encode(q, SR, bandwidth=1.5).codes[0]
    codes, _, _ = stream_encode(client24, x, SR, 1.5, random_sizes(7, 3000), fmt="s16le")
    assert codes.shape == offline.shape
    assert mismatched_frames(codes, offline) <= max(1, offline.shape[-1] // 100)


def test_codes_come_as_soon_as_final(client24, codec24):
    """After the 7-frame start-up, every 320 samples sent give one frame back before the end."""
    x = make_signal(SR // 2, 1, SR, seed=5)
    pcm = x.T.astype("<f4").tobytes()
    with client24.websocket_connect("/v1/stream/encode") as ws:
        ws.send_text(json.dumps({"sample_rate": SR, "channels": 1, "bandwidth": 1.5}))
        ws.receive_json()
        ws.send_bytes(pcm[: 4 * 7 * 320])
        first = ws.receive_json()
        assert first["start"] == 0 and len(first["codes"][0]) == 7
        got = 7
        for f in range(7, 20):
            ws.send_bytes(pcm[4 * 320 * f : 4 * 320 * (f + 1)])
            m = ws.receive_json()
            assert m["start"] == got and len(m["codes"][0]) == 1
            got += 1


def test_encode_socket_48k_is_exact(codec48):
    x = make_signal(int(1.3 * 48000), 2, 48000, seed=11)
    offline = codec48.encode(x, 48000, bandwidth=6.0)
    with local_client(create_app(codec48)) as client:
        codes, scales, msgs = stream_encode(client, x, 48000, 6.0, random_sizes(3, 100_000))
        assert torch.equal(codes, offline.codes[0])
        assert torch.equal(torch.tensor(scales), offline.scales[0])
        # the codes messages, forwarded as they are, decode to the offline audio
        audio = stream_decode(client, msgs[:-1], length=x.shape[-1], channels=2)
    ref = codec48.decode(offline)[0].numpy()
    assert audio.shape == ref.shape
    assert np.abs(audio - ref).max() <= 1e-4


def stream_decode(client, messages, length=None, channels=1, fmt="f32le") -> np.ndarray:
    with client.websocket_connect("/v1/stream/decode") as ws:
        ws.send_text(json.dumps({"format": fmt, "length": length}))
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["channels"] == channels
        for m in messages:
            ws.send_text(json.dumps(m))
        ws.send_text(json.dumps({"type": "end"}))
        chunks = []
        while True:
            msg = ws.receive()
            if msg.get("bytes") is not None:
                chunks.append(np.frombuffer(msg["bytes"], dtype="<f4" if fmt == "f32le" else "<i2"))
                continue
            done = json.loads(msg["text"])
            break
    pcm = np.concatenate(chunks).reshape(-1, channels).T
    assert done == {"type": "done", "samples": pcm.shape[-1]}
    return pcm


@pytest.mark.parametrize("known_length", [True, False])
def test_decode_socket_equals_offline(client24, codec24, known_length):
    x = make_signal(int(0.9 * SR) + 5, 1, SR, seed=8)
    enc = codec24.encode(x, SR, bandwidth=3.0)
    ref = codec24.decode(enc)[0].numpy()
    codes = enc.codes[0]
    rng = np.random.default_rng(1)
    msgs, f = [], 0
    while f < codes.shape[-1]:
        k = int(rng.integers(1, 9))
        msgs.append({"type": "codes", "codes": codes[:, f : f + k].tolist()})
        f += k
    audio = stream_decode(client24, msgs, length=x.shape[-1] if known_length else None)
    if not known_length:
        assert audio.shape[-1] == codes.shape[-1] * 320
        audio = audio[:, : x.shape[-1]]
    assert audio.shape == ref.shape
    assert np.abs(audio - ref).max() <= 1e-4


def test_concurrent_streams_share_the_model(codec24):
    """Three interleaved encode streams: each one's codes equal its own offline encoding."""
    xs = [make_signal(SR, 1, SR, seed=20 + i) for i in range(3)]
    app = create_app(codec24)
    with local_client(app) as client:
        sockets = [client.websocket_connect("/v1/stream/encode").__enter__() for _ in xs]
        for ws in sockets:
            ws.send_text(json.dumps({"sample_rate": SR, "channels": 1, "bandwidth": 1.5}))
            assert ws.receive_json()["type"] == "ready"
        assert client.get("/v1/health").json()["streams"] == 3
        for i in range(0, SR, 1920):
            for ws, x in zip(sockets, xs, strict=True):
                ws.send_bytes(x[0, i : i + 1920].astype("<f4").tobytes())
        results = []
        for ws in sockets:
            ws.send_text(json.dumps({"type": "end"}))
            msgs = []
            while (m := ws.receive_json())["type"] == "codes":
                msgs.append(torch.tensor(m["codes"]))
            results.append(torch.cat(msgs, dim=-1))
            ws.__exit__(None, None, None)
        stats = client.get("/v1/stats").json()
        assert stats["steps"] > 0 and stats["stream_steps_total"] >= stats["steps"]
    for x, codes in zip(xs, results, strict=True):
        offline = codec24.encode(x, SR, bandwidth=1.5).codes[0]
        assert codes.shape == offline.shape
        assert mismatched_frames(codes, offline) <= max(1, offline.shape[-1] // 100)


@pytest.mark.skipif(not hasattr(stream_mod, "push_many"), reason="rvqkit.stream.push_many not available")
@pytest.mark.parametrize("batching", [True, False])
def test_scheduler_step_batches_all_streams(codec24, monkeypatch, batching):
    """One scheduler step over 4 streams with 3 equal chunks each: with batching, one push_many call
    per round over all 4 streams; without, one push per stream and round. Codes equal offline either way."""
    calls = []
    real = stream_mod.push_many

    def spy(encoders, chunks):
        calls.append(len(encoders))
        return real(encoders, chunks)

    monkeypatch.setattr(stream_mod, "push_many", spy)
    app = create_app(codec24, ServerSettings(batching=batching))
    hub = app.state.hub
    xs = [make_signal(3 * 1920 + 1000, 1, SR, seed=30 + i) for i in range(4)]
    streams = [_Stream("encode", codec24.stream_encoder(3.0)) for _ in xs]
    for s, x in zip(streams, xs, strict=True):
        s.pending = [x[:, i : i + 1920] for i in range(0, 3 * 1920, 1920)]
        s.end = True
    jobs = [(s, *s.take()) for s in streams]
    results = hub._step(jobs)
    if batching:
        assert calls == [4, 4, 4] and hub.calls == 3
    else:
        assert calls == [] and hub.calls == 12
    for s, x, res in zip(streams, xs, results, strict=True):
        assert res[-1] is None  # flushed
        packets = [r for r in res[:-1]]
        codes = torch.cat([p.codes for p in packets], dim=-1)[0]
        offline = codec24.encode(x[:, : s.engine.samples_in], SR, bandwidth=3.0).codes[0]
        assert codes.shape == offline.shape
        assert mismatched_frames(codes, offline) <= 1


def _expect_error(ws, kind: str, code: int) -> dict:
    msg = ws.receive_json()
    assert msg["type"] == "error" and msg["error"] == kind, msg
    assert msg["message"]
    with pytest.raises(WebSocketDisconnect) as e:
        ws.receive_text()
    assert e.value.code == code
    return msg


def test_stream_limit_refuses_clearly(codec24):
    app = create_app(codec24, ServerSettings(max_streams=1))
    with local_client(app) as client, client.websocket_connect("/v1/stream/encode") as first:
        first.send_text(json.dumps({"sample_rate": SR, "channels": 1}))
        assert first.receive_json()["type"] == "ready"
        with client.websocket_connect("/v1/stream/decode") as second:
            msg = _expect_error(second, "too_many_streams", 1013)
            assert "limit of 1 concurrent streams" in msg["message"]
        assert client.get("/v1/health").json()["streams"] == 1
    assert app.state.hub.active == 0


def test_idle_socket_is_closed(codec24):
    app = create_app(codec24, ServerSettings(idle_timeout_s=0.3))
    with local_client(app) as client, client.websocket_connect("/v1/stream/encode") as ws:
        ws.send_text(json.dumps({"sample_rate": SR, "channels": 1}))
        ws.receive_json()
        t = time.monotonic()
        _expect_error(ws, "idle_timeout", 1008)
        assert time.monotonic() - t < 5
    assert app.state.hub.active == 0


@pytest.mark.parametrize(
    "path, first, then, kind",
    [
        ("encode", "not json", None, "bad_request"),
        ("encode", {"sample_rate": SR, "channels": 1, "bandwidth": 5.0}, None, "bad_request"),
        ("encode", {"sample_rate": -1, "channels": 1}, None, "bad_request"),
        ("encode", {"sample_rate": 1, "channels": 1}, None, "bad_request"),  # below 4000 Hz
        ("encode", {"sample_rate": 3999, "channels": 1}, None, "bad_request"),
        ("encode", {"sample_rate": SR, "channels": 1, "path": "/etc/passwd"}, None, "bad_request"),
        ("encode", {"sample_rate": SR, "channels": 1}, np.full(100, np.nan, "<f4").tobytes(), "bad_audio"),
        ("encode", {"sample_rate": SR, "channels": 1}, b"\0" * 2_000_000, "too_large"),
        ("encode", {"sample_rate": SR, "channels": 1}, {"type": "end"}, "bad_audio"),
        ("encode", {"sample_rate": SR, "channels": 1}, {"type": "pause"}, "bad_request"),
        ("decode", {"format": "f32le"}, b"\0\0", "bad_request"),
        ("decode", {"format": "f32le"}, {"type": "codes", "codes": [[1024]]}, "bad_codes"),
        ("decode", {"format": "f32le"}, {"type": "codes", "codes": [[1, 2], [3]]}, "bad_codes"),
        ("decode", {"format": "f32le"}, {"type": "codes", "codes": []}, "bad_codes"),
        ("decode", {"format": "f32le"}, {"type": "codes", "codes": list(range(5000))}, "bad_request"),
        ("decode", {"format": "f32le"}, {"type": "codes", "codes": [[True, 1]]}, "bad_request"),
        ("decode", {"format": "f32le"}, [1, 2], "bad_request"),
        ("decode", {"format": "wav"}, None, "bad_request"),
    ],
)
def test_bad_stream_messages_are_refused(client24, path, first, then, kind):
    with client24.websocket_connect(f"/v1/stream/{path}") as ws:
        ws.send_text(first if isinstance(first, str) else json.dumps(first))
        if then is not None:
            assert ws.receive_json()["type"] == "ready"
            if isinstance(then, bytes):
                ws.send_bytes(then)
            else:
                ws.send_text(json.dumps(then))
        _expect_error(ws, kind, 1008)
    assert client24.get("/v1/health").json()["streams"] == 0


def test_lagging_streams_join_their_chunks(codec24):
    """Streams with 1, 4 and 2 chunks waiting: round 0 takes 1 chunk from each, round 1 one more from
    the two that lag, round 2 the last two of the one that lags most, as one piece."""
    assert round_sizes([1, 4, 2]) == [[1], [1, 1, 2], [1, 1]]
    assert round_sizes([0, 3]) == [[], [3]]
    streams = [_Stream("encode", codec24.stream_encoder(1.5)) for _ in range(3)]
    for s, k in zip(streams, (1, 4, 2), strict=True):
        s.pending = [np.zeros((1, 1920), np.float32) for _ in range(k)]
    taken = [s.take(n)[0] for s, n in zip(streams, round_sizes([1, 4, 2]), strict=True)]
    assert [[p.shape[-1] for p in t] for t in taken] == [[1920], [1920, 1920, 3840], [1920, 1920]]
    small = _Stream("encode", codec24.stream_encoder(1.5))
    small.pending = [np.zeros((1, 100), np.float32) for _ in range(40)]  # tiny messages are merged
    assert [p.shape[-1] for p in small.take()[0]] == [2000, 2000]


def test_stream_that_falls_behind_is_closed(codec24, monkeypatch):
    real = stream_mod.StreamEncoder.push

    def slow_push(self, x):
        time.sleep(0.3)
        return real(self, x)

    monkeypatch.setattr(stream_mod.StreamEncoder, "push", slow_push)
    app = create_app(codec24, ServerSettings(max_backlog_s=0.5, batching=False))
    x = make_signal(2 * SR, 1, SR).T.astype("<f4")
    with local_client(app) as client, client.websocket_connect("/v1/stream/encode") as ws:
        ws.send_text(json.dumps({"sample_rate": SR, "channels": 1}))
        ws.receive_json()
        for i in range(0, 2 * SR, 1920):
            ws.send_bytes(x[i : i + 1920].tobytes())
        while (m := ws.receive_json())["type"] == "codes":
            pass
        assert m["type"] == "error" and m["error"] == "overloaded"
    assert app.state.hub.active == 0


def test_fault_in_a_step_ends_its_streams_only(codec24, monkeypatch):
    app = create_app(codec24)
    hub = app.state.hub
    real = hub._step
    monkeypatch.setattr(hub, "_step", lambda jobs: 1 / 0)
    x = make_signal(SR // 2, 1, SR)
    with local_client(app) as client:
        with client.websocket_connect("/v1/stream/encode") as ws:
            ws.send_text(json.dumps({"sample_rate": SR, "channels": 1}))
            ws.receive_json()
            ws.send_bytes(x.T.astype("<f4").tobytes())
            _expect_error(ws, "internal", 1011)
        monkeypatch.setattr(hub, "_step", real)
        codes, _, _ = stream_encode(client, x, SR, 6.0, random_sizes(0, 5000))  # the server still works
        assert codes.shape[-1] == codec24.encode(x, SR).codes.shape[-1]
