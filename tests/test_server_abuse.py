"""The server against hostile input (issue 20): every abuse class gets a clean 4xx / 503 or a clean socket
close with an error message, fast, and the server stays responsive and small.

Most classes run in-process (FastAPI's TestClient). The ones about responsiveness and memory run a real
uvicorn server in a subprocess on 127.0.0.1 (loopback only) and check, while the abusive request is in
flight, that ``/v1/health`` answers within 200 ms and the server's RSS grows by less than 200 MB.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from server_helpers import local_client
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from rvqkit.server import ServerSettings, create_app
from rvqkit.server.security import host_name, trusted_hosts_for

SR = 24000


@pytest.fixture(scope="module")
def app24(codec24):
    return create_app(codec24, ServerSettings(max_duration_s=20.0, idle_timeout_s=5.0))


@pytest.fixture(scope="module")
def client(app24):
    with local_client(app24) as c:
        yield c


def _expect_close(ws, kind: str) -> dict:
    msg = ws.receive_json()
    while msg.get("type") == "codes":
        msg = ws.receive_json()
    assert msg["type"] == "error" and msg["error"] == kind, msg
    assert msg["message"]
    with pytest.raises(WebSocketDisconnect):
        ws.receive_text()
    return msg


# -- Host and Origin ------------------------------------------------------------------------------------------
def test_untrusted_host_is_refused(client):
    """DNS rebinding: a page whose name now points at 127.0.0.1 sends its own name as Host."""
    for host in ("evil.example.com", "evil.example.com:8000", "127.0.0.1.evil.example"):
        r = client.get("/v1/info", headers={"host": host})
        assert r.status_code == 400 and r.json()["error"] == "bad_host", host
    for host in ("localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
        assert client.get("/v1/health", headers={"host": host}).status_code == 200, host
    with (
        pytest.raises(WebSocketDenialResponse),
        client.websocket_connect("ws://evil.example/v1/stream/encode"),
    ):
        pass


def test_cross_origin_socket_and_post_are_refused(client, codec24):
    for origin in ("https://evil.example", "null", "http://localhost:9999"):
        with (
            pytest.raises(WebSocketDenialResponse) as e,
            client.websocket_connect("/v1/stream/encode", headers={"origin": origin}),
        ):
            pass
        assert e.value.status_code == 403 and e.value.json()["error"] == "forbidden_origin"
        r = client.post("/v1/decode", files={"file": ("c.npz", b"x")}, headers={"origin": origin})
        assert r.status_code == 403 and r.json()["error"] == "forbidden_origin"
    # the server's own page (same origin), and clients without an Origin header, are served
    with client.websocket_connect("/v1/stream/encode", headers={"origin": "http://localhost"}) as ws:
        ws.send_text(json.dumps({"sample_rate": SR, "channels": 1}))
        assert ws.receive_json()["type"] == "ready"
    r = client.post("/v1/decode", files={"file": ("c.npz", b"x")}, headers={"origin": "http://localhost"})
    assert r.status_code == 400 and r.json()["error"] == "bad_codes"
    assert client.get("/v1/info", headers={"origin": "https://evil.example"}).status_code == 200  # reads


def test_allowed_origins_and_hosts_widen(codec24):
    app = create_app(
        codec24,
        ServerSettings(allowed_origins=("https://app.example",), trusted_hosts=("codec.lan",)),
    )
    with local_client(app) as c:
        assert c.get("/v1/health", headers={"host": "codec.lan:8000"}).status_code == 200
        assert c.get("/v1/health").status_code == 400  # localhost no longer listed
        with c.websocket_connect(
            "ws://codec.lan/v1/stream/decode", headers={"origin": "https://app.example"}
        ) as ws:
            ws.send_text(json.dumps({"format": "f32le"}))
            assert ws.receive_json()["type"] == "ready"
    assert host_name("[::1]:80") == "::1" and host_name("LocalHost:8000") == "localhost"
    assert {"localhost", "127.0.0.1", "::1", "10.0.0.5"} <= set(trusted_hosts_for("10.0.0.5"))
    assert "*" in trusted_hosts_for("127.0.0.1", ["*"])


# -- bounds before work ---------------------------------------------------------------------------------------
def test_stream_encode_tiny_sample_rate_is_refused(client):
    """1 Hz once made a 64 KB message resample to 393 M samples on the event loop."""
    with client.websocket_connect("/v1/stream/encode") as ws:
        ws.send_text(json.dumps({"sample_rate": 1, "channels": 1}))
        msg = _expect_close(ws, "bad_request")
        assert "sample_rate" in msg["message"]


def test_stream_encode_cost_is_counted_before_resampling(codec24):
    """At 4 kHz a 1 MiB message is 1.5 M samples after resampling (62 s): beyond a 30 s stream limit
    it is refused before it is resampled."""
    app = create_app(codec24, ServerSettings(max_stream_s=30.0, max_backlog_s=100.0))
    with local_client(app) as c, c.websocket_connect("/v1/stream/encode") as ws:
        ws.send_text(json.dumps({"sample_rate": 4000, "channels": 1, "format": "f32le"}))
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(np.zeros(250_000, "<f4").tobytes())
        _expect_close(ws, "too_large")


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _meta(n_q: int = 2) -> np.ndarray:
    meta = {
        "format": "rvqkit-codes",
        "version": 1,
        "model": "encodec_24khz",
        "weights_sha256": None,
        "sample_rate": SR,
        "channels": 1,
        "bandwidth": 1.5,
        "n_q": n_q,
    }
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


@pytest.mark.parametrize("case", ["zip bomb", "huge length", "unused member", "wav"])
def test_npz_upload_is_bounded(client, case):
    """A 400 KB savez_compressed of zeros once cost 2 GB; an unused 100 MB member was loaded."""
    if case == "zip bomb":  # 1 G codes of zeros, compressed to about 1 MB
        frames = 500_000_000
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            with z.open("codes.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "<i2", "fortran_order": False, "shape": (1, 2, frames)}
                )
                zeros = b"\0" * (1 << 20)
                for _ in range(4):  # only the first 4 MB are written: the header alone must be refused
                    f.write(zeros)
            for name, arr in {
                "lengths": np.array([frames * 320]),
                "frame_lengths": np.array([frames]),
                "meta": _meta(),
            }.items():
                with z.open(f"{name}.npy", "w") as f:
                    np.lib.format.write_array(f, arr)
        data, kinds = buf.getvalue(), ("too_large", "bad_codes")
    elif case == "huge length":
        data = _npz(
            codes=np.zeros((1, 2, 10), np.int16),
            lengths=np.array([10**12]),
            frame_lengths=np.array([10]),
            meta=_meta(),
        )
        kinds = ("too_large", "bad_codes")
    elif case == "unused member":
        data = _npz(
            codes=np.zeros((1, 2, 10), np.int16),
            lengths=np.array([3200]),
            frame_lengths=np.array([10]),
            meta=_meta(),
            junk=np.zeros(50_000_000, np.uint8),
        )
        kinds = ("bad_codes",)
    else:
        buf = io.BytesIO()
        import soundfile as sf

        sf.write(buf, np.zeros(1000, np.float32), SR, format="WAV")
        data, kinds = buf.getvalue(), ("bad_codes",)
    r = client.post("/v1/decode", files={"file": ("c.npz", data)})
    assert r.status_code in (400, 413) and r.json()["error"] in kinds, r.text
    assert "pickle" not in r.text


def test_flat_json_codes_fail_fast(client, codec24):
    """A flat list where rows are expected once built one error per element on the event loop."""
    body = {
        "model": codec24.name,
        "sample_rate": SR,
        "channels": 1,
        "bandwidth": 1.5,
        "n_q": 2,
        "length": 320 * 1000,
        "frames": 1000,
        "codes": [0] * 1_000_000,  # 3 MB: over this server's JSON limit (20 s of codes)
    }
    r = client.post("/v1/decode/json", json=body)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    body["codes"] = [0] * 50_000  # under the limit: one error
    r = client.post("/v1/decode/json", json=body)
    assert r.status_code == 422 and r.json()["error"] == "bad_request"
    assert len(r.json()["message"]) < 500
    body["codes"] = [["x"] * 1000] * 2  # bad elements inside rows: one error, not two thousand
    r = client.post("/v1/decode/json", json=body)
    assert r.status_code == 422 and r.json()["message"].count("codes") == 1
    body["codes"] = [[0] * 1000] * 40  # more rows than the model's codebooks
    assert client.post("/v1/decode/json", json=body).status_code == 422


def test_json_body_size_limit(codec24):
    app = create_app(codec24, ServerSettings(max_json_bytes=100_000))
    with local_client(app) as c:
        assert c.get("/v1/info").json()["limits"]["max_json_bytes"] == 100_000
        r = c.post(
            "/v1/decode/json",
            content=b"[" + b"0," * 60_000 + b"0]",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413 and r.json()["error"] == "too_large"
