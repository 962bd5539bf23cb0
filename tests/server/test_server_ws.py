"""WebSocket streaming of the codec server: streamed codes equal offline ``encode`` for random chunk
sizes (compared as tests/test_stream.py does at 24 kHz; bit-exact at 48 kHz) and, bit for bit, offline
encoding through an engine of the server's configuration; the decode socket equals offline ``decode``;
streams share the engine's batched calls; and the limits refuse clearly."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from conftest import make_signal
from server_helpers import local_client, mismatched_frames
from starlette.websockets import WebSocketDisconnect

from rvqkit.engine import Engine
from rvqkit.packets import CodePacket
from rvqkit.server import ServerSettings, create_app
from rvqkit.server.sockets import STEP_SAMPLES, decode_offline, encode_offline

SR = 24000
STEP_FRAMES = STEP_SAMPLES // 320  # 6 frames per 80 ms feed


def server_engine(codec, settings: ServerSettings | None = None) -> Engine:
    """A fresh engine of the server's configuration (fp32, batched, max_streams slots, 80 ms feeds)."""
    slots = (settings or ServerSettings()).max_streams
    return Engine(codec.model, codec.device, "fp32", "batched", slots, STEP_SAMPLES)


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
    """Codes come per 80 ms engine feed, as soon as its last sample is in: after the 7-frame start-up
    (which the second feed completes, so its message holds 12 frames), every 1920 samples sent give
    their 6 frames back before the end, even when the step's samples arrive in several messages."""
    x = make_signal(SR, 1, SR, seed=5)
    pcm = x.T.astype("<f4").tobytes()
    with client24.websocket_connect("/v1/stream/encode") as ws:
        ws.send_text(json.dumps({"sample_rate": SR, "channels": 1, "bandwidth": 1.5}))
        ws.receive_json()
        ws.send_bytes(pcm[: 4 * 2 * STEP_SAMPLES])
        first = ws.receive_json()
        assert first["start"] == 0 and len(first["codes"][0]) == 2 * STEP_FRAMES
        got = 2 * STEP_FRAMES
        for k in range(2, 8):
            step = pcm[4 * STEP_SAMPLES * k : 4 * STEP_SAMPLES * (k + 1)]
            ws.send_bytes(step[:1001])  # a partial step (splitting a sample) waits for the rest
            ws.send_bytes(step[1001:])
            m = ws.receive_json()
            assert m["start"] == got and len(m["codes"][0]) == STEP_FRAMES
            got += STEP_FRAMES


def test_encode_socket_48k_is_exact(codec48):
    """48 kHz: codes and scales equal, bit for bit, offline encoding through an engine of the server's
    configuration; against ``Codec.encode`` (which computes its rows alone, not in batched rows) codes
    equal except at near-ties and scales to float rounding."""
    x = make_signal(int(1.3 * 48000), 2, 48000, seed=11)
    offline = codec48.encode(x, 48000, bandwidth=6.0)
    ref = server_engine(codec48).encode([torch.from_numpy(x)], codec48.n_q_for(6.0))[0]
    with local_client(create_app(codec48)) as client:
        codes, scales, msgs = stream_encode(client, x, 48000, 6.0, random_sizes(3, 100_000))
        assert torch.equal(codes, ref.codes)
        assert torch.equal(torch.tensor(scales), ref.scales)
        assert mismatched_frames(codes, offline.codes[0]) <= max(1, codes.shape[-1] // 100)
        assert torch.allclose(torch.tensor(scales), offline.scales[0], rtol=1e-6, atol=0)
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


@pytest.mark.parametrize("batching", [True, False])
def test_scheduler_step_batches_all_streams(codec24, batching):
    """One scheduler step over 4 streams with 3 equal 80 ms chunks and an end each: batched, the three
    regular feeds of all 4 streams are one engine call each, plus one final call per stream (the
    engine's rule); without batching one call per stream and feed. Codes equal offline either way."""
    app = create_app(codec24, ServerSettings(batching=batching))
    hub = app.state.hub
    assert hub.batching == batching and hub.engine.rows == ("batched" if batching else "alone")
    xs = [make_signal(3 * STEP_SAMPLES + 1000, 1, SR, seed=30 + i) for i in range(4)]
    streams = [hub.open_encoder(codec24.n_q_for(3.0)) for _ in xs]
    for s, x in zip(streams, xs, strict=True):
        s.pending = [x[:, i : i + STEP_SAMPLES] for i in range(0, 3 * STEP_SAMPLES, STEP_SAMPLES)]
        s.pending.append(x[:, 3 * STEP_SAMPLES :])
        s.end = True
    results = hub._step([(s, *s.take()) for s in streams])
    assert hub.calls == (3 + 4 if batching else 4 * 4)
    for x, res in zip(xs, results, strict=True):
        assert len(res) == 2 and res[-1] is None  # one packet for the step, then the end marker
        offline = encode_offline(hub.engine, torch.from_numpy(x), codec24.n_q_for(3.0))
        assert torch.equal(res[0].codes, offline.codes)
        assert res[0].codes.shape[-1] == codec24.encode(x, SR, bandwidth=3.0).codes.shape[-1]


def test_concurrent_socket_streams_share_engine_calls(codec24):
    """Six encode sockets sending 80 ms chunks of signals of different lengths, in random-size binary
    messages, while a REST job holds the model: the engine then runs them together, in far fewer calls
    than streams x feeds; and every stream's codes equal, bit for bit, offline encoding of its whole
    signal through an engine of the server's configuration (exactly what the stream's feeds give), and
    ``Engine.encode`` bit for bit up to its wider final feed (the last two steps)."""
    rng = np.random.default_rng(3)
    lengths = [int(n) for n in rng.integers(SR // 2, 2 * SR, 6)]
    xs = [make_signal(n, 1, SR, seed=40 + i) for i, n in enumerate(lengths)]
    n_q = codec24.n_q_for(6.0)
    app = create_app(codec24)
    hub = app.state.hub
    with local_client(app) as client:
        sockets = [client.websocket_connect("/v1/stream/encode").__enter__() for _ in xs]
        for ws in sockets:
            ws.send_text(json.dumps({"sample_rate": SR, "channels": 1, "bandwidth": 6.0}))
            assert ws.receive_json()["type"] == "ready"
        hub.gate.acquire(stream=False)  # the model busy: everything the streams send waits for it
        try:
            pcms = [x.T.astype("<f4").tobytes() for x in xs]
            pos = [0] * len(xs)
            while any(p < len(b) for p, b in zip(pos, pcms, strict=True)):
                for i, ws in enumerate(sockets):
                    n = int(rng.integers(1, 3 * 4 * STEP_SAMPLES))
                    if pos[i] < len(pcms[i]):
                        ws.send_bytes(pcms[i][pos[i] : pos[i] + n])
                        pos[i] += n
            for ws in sockets:
                ws.send_text(json.dumps({"type": "end"}))
            time.sleep(0.5)  # let every message reach the hub
        finally:
            hub.gate.release()
        results = []
        for ws in sockets:
            msgs = []
            while (m := ws.receive_json())["type"] == "codes":
                msgs.append(torch.tensor(m["codes"]))
            assert m["type"] == "done", m
            results.append(torch.cat(msgs, dim=-1))
            ws.__exit__(None, None, None)
    feeds = sum(n // STEP_SAMPLES + 1 for n in lengths)
    assert hub.calls < feeds / 2, (hub.calls, feeds)
    engine = server_engine(codec24)
    for x, codes in zip(xs, results, strict=True):
        ref = encode_offline(engine, torch.from_numpy(x), n_q).codes[0]
        assert torch.equal(codes, ref)
        whole = engine.encode([torch.from_numpy(x)], n_q)[0].codes
        assert codes.shape == whole.shape
        assert torch.equal(codes[:, : -2 * STEP_FRAMES], whole[:, : -2 * STEP_FRAMES])
        assert mismatched_frames(codes, whole) <= 1


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_many_streams_in_one_step_are_exact_with_one_thread(codec24, one_thread):
    """20 streams in one step, torch on one thread (as ``rvqkit serve --threads 1``): PyTorch computes
    1x1 convolutions of 16 rows or more with another kernel there, so the hub advances at most 15 streams
    per call; every stream's codes equal its offline encoding (2 rows), bit for bit."""
    app = create_app(codec24)
    hub = app.state.hub
    assert hub.rows_per_call() == 15
    n_q = codec24.n_q_for(6.0)
    xs = [make_signal(SR + 300 * i, 1, SR, seed=60 + i) for i in range(20)]
    streams = [hub.open_encoder(n_q) for _ in xs]
    for s, x in zip(streams, xs, strict=True):
        s.pending, s.end = [x], True
    results = hub._step([(s, *s.take()) for s in streams])
    engine = server_engine(codec24)
    for x, res in zip(xs, results, strict=True):
        assert res[-1] is None
        assert torch.equal(res[0].codes, encode_offline(engine, torch.from_numpy(x), n_q).codes)


@pytest.mark.parametrize("seed", [0, 1])
def test_encode_stream_is_exact_for_any_chunking(client24, codec24, seed):
    """One stream in random-size binary messages (splitting samples): its codes equal, bit for bit,
    offline encoding through an engine of the server's configuration."""
    x = make_signal(int((0.7 + seed) * SR) + 13 * seed, 1, SR, seed=50 + seed)
    codes, _, _ = stream_encode(client24, x, SR, 3.0, random_sizes(seed + 5, 4 * 5000))
    ref = encode_offline(server_engine(codec24), torch.from_numpy(x), codec24.n_q_for(3.0))
    assert torch.equal(codes, ref.codes[0])


@pytest.mark.parametrize("known_length", [True, False])
def test_decode_stream_equals_engine_offline(client24, codec24, known_length):
    """Codes in random-size messages decode, bit for bit, to the engine's offline decode of them."""
    x = make_signal(int(1.3 * SR) + 77, 1, SR, seed=9)
    codes = codec24.encode(x, SR, bandwidth=6.0).codes[0]
    rng = np.random.default_rng(4)
    msgs, f = [], 0
    while f < codes.shape[-1]:
        k = int(rng.integers(1, 15))
        msgs.append({"type": "codes", "codes": codes[:, f : f + k].tolist()})
        f += k
    audio = stream_decode(client24, msgs, length=x.shape[-1] if known_length else None)
    ref = decode_offline(server_engine(codec24), CodePacket(codes[None]))[0].numpy()
    assert ref.shape[-1] == codes.shape[-1] * 320
    if known_length:
        ref = ref[:, : x.shape[-1]]
    assert audio.shape == ref.shape
    assert np.array_equal(audio, ref)


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


def test_lagging_streams_catch_up_in_one_step(codec24):
    """Streams with 1, 4 and 2 chunks of 80 ms waiting: one step runs every feed they can take, the
    first feed of all three in one call, the second of the two that lag in another, then the last two
    of the one that lags most (4 calls, not 7); each gets its frames so far (the first two feeds fill the
    7-frame start-up)."""
    app = create_app(codec24)
    hub = app.state.hub
    streams = [hub.open_encoder(codec24.n_q_for(1.5)) for _ in range(3)]
    x = make_signal(4 * STEP_SAMPLES, 1, SR, seed=6)
    for s, k in zip(streams, (1, 4, 2), strict=True):
        s.pending = [x[:, i * STEP_SAMPLES : (i + 1) * STEP_SAMPLES] for i in range(k)]
    results = hub._step([(s, *s.take()) for s in streams])
    assert hub.calls == 4
    frames = [sum(p.num_frames for p in r) for r in results]
    assert frames == [0, 4 * STEP_FRAMES, 2 * STEP_FRAMES]
    assert torch.equal(results[2][0].codes, results[1][0].codes[..., : 2 * STEP_FRAMES])  # same audio


def test_stream_that_falls_behind_is_closed(codec24, monkeypatch):
    app = create_app(codec24, ServerSettings(max_backlog_s=0.5, batching=False))
    real = app.state.hub.engine.advance

    def slow_advance(jobs):
        time.sleep(0.3)
        return real(jobs)

    monkeypatch.setattr(app.state.hub.engine, "advance", slow_advance)
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


def test_failed_engine_step_ends_its_streams_only(codec24, monkeypatch):
    """An engine fault in one step ends the streams of that step with an error; the next stream works."""
    app = create_app(codec24)
    hub = app.state.hub
    real = hub.engine.advance
    monkeypatch.setattr(hub.engine, "advance", lambda jobs: 1 / 0)
    x = make_signal(SR // 2, 1, SR)
    with local_client(app) as client:
        with client.websocket_connect("/v1/stream/encode") as ws:
            ws.send_text(json.dumps({"sample_rate": SR, "channels": 1}))
            ws.receive_json()
            ws.send_bytes(x.T.astype("<f4").tobytes())
            _expect_error(ws, "internal", 1011)
        monkeypatch.setattr(hub.engine, "advance", real)
        codes, _, _ = stream_encode(client, x, SR, 6.0, random_sizes(0, 5000))
        assert torch.equal(codes, encode_offline(server_engine(codec24), torch.from_numpy(x), 8).codes[0])
        assert client.get("/v1/health").json()["streams"] == 0


def test_each_stream_message_is_parsed_and_validated_once(client24, codec24, monkeypatch):
    """Every client message goes through one ``json.loads`` (codes) or one pydantic validation
    (start, control, codes object) in the sessions: the decode socket does not parse a message twice."""
    import rvqkit.server.sessions as sessions

    validated: list[str] = []
    loads: list[str] = []
    real_parse, real_loads = sessions.parse_message, sessions.json.loads

    def counting_parse(model, text, what):
        validated.append(model.__name__)
        return real_parse(model, text, what)

    def counting_loads(text, *args, **kwargs):
        loads.append(text)
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(sessions, "parse_message", counting_parse)
    monkeypatch.setattr(sessions.json, "loads", counting_loads)
    enc = codec24.encode(make_signal(int(0.5 * SR), 1, SR, seed=3), SR, bandwidth=3.0)
    codes = enc.codes[0]
    msgs = [{"type": "codes", "codes": codes[:, f : f + 7].tolist()} for f in range(0, codes.shape[-1], 7)]
    stream_decode(client24, msgs)
    assert validated == ["DecodeStart"] + ["CodesMessage"] * len(msgs)
    sent = [json.dumps(m) for m in msgs] + [json.dumps({"type": "end"})]
    assert [loads.count(t) for t in sent] == [1] * len(sent)  # each codes message and the end, once

    validated.clear()
    stream_encode(client24, make_signal(int(0.3 * SR), 1, SR, seed=4), SR, 3.0, [4000])
    assert validated == ["EncodeStart", "ControlMessage"]
