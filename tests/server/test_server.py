"""REST API of the codec server (FastAPI's TestClient): encode / decode / compress / decompress equal the
library's results, every bad input is a 4xx JSON error, limits hold, the page and its assets are served."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_signal
from server_helpers import local_client, read_wav, wav_bytes

from rvqkit import Encoded
from rvqkit.server import ServerSettings, create_app

SR = 24000


@pytest.fixture(scope="module")
def client(codec24):
    app = create_app(codec24, ServerSettings(max_upload_bytes=400_000, max_duration_s=3.0))
    with local_client(app) as c:
        yield c


@pytest.fixture(scope="module")
def signal():
    return make_signal(int(0.7 * SR) + 11, 1, SR, seed=3)


def _encode(client, data: bytes, **params):
    return client.post("/v1/encode", params=params, files={"file": ("x.wav", data, "audio/wav")})


def test_health_info_openapi(client, codec24):
    assert client.get("/v1/health").json() == {"status": "ok", "streams": 0, "max_streams": 64}
    info = client.get("/v1/info").json()
    assert info["model"] == codec24.name and info["sample_rate"] == SR
    assert info["codebooks"] == {"1.5": 2, "3": 4, "6": 8, "12": 16, "24": 32}
    assert info["stream_first_codes_samples"] == 7 * 320
    assert info["limits"]["max_upload_bytes"] == 400_000
    stats = client.get("/v1/stats").json()
    assert stats["streams"] == 0 and stats["steps"] >= 0 and stats["batching"] == info["batching"]
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/encode",
        "/v1/decode",
        "/v1/decode/json",
        "/v1/compress",
        "/v1/decompress",
        "/v1/info",
    } <= set(paths)


@pytest.mark.parametrize("bandwidth", [1.5, 6.0])
def test_encode_json_equals_library(client, codec24, signal, bandwidth):
    r = _encode(client, wav_bytes(signal, SR), bandwidth=bandwidth)
    assert r.status_code == 200, r.text
    body = r.json()
    ref = codec24.encode(signal, SR, bandwidth=bandwidth)
    assert body["n_q"] == ref.n_q and body["length"] == signal.shape[-1]
    assert body["frames"] == int(ref.frame_lengths[0]) and body["weights_sha256"] == codec24.weights_sha256
    assert torch.equal(torch.tensor(body["codes"]), ref.codes[0])


def test_encode_resamples_and_mixes_like_the_library(client, codec24):
    x = make_signal(16000, 2, 16000, seed=9)
    body = _encode(client, wav_bytes(x, 16000), bandwidth=3.0).json()
    ref = codec24.encode(x, 16000, bandwidth=3.0)
    assert body["length"] == int(ref.lengths[0])
    assert torch.equal(torch.tensor(body["codes"]), ref.codes[0])


def test_npz_codes_round_trip_and_decode(client, codec24, signal, tmp_path):
    r = _encode(client, wav_bytes(signal, SR), bandwidth=6.0, format="npz")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    (tmp_path / "c.npz").write_bytes(r.content)
    enc = Encoded.load(tmp_path / "c.npz")  # the documented safe format
    assert torch.equal(enc.codes, codec24.encode(signal, SR, bandwidth=6.0).codes)
    wav = client.post("/v1/decode", files={"file": ("c.npz", r.content)})
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    audio, sr = read_wav(wav.content)
    ref = codec24.decode(enc)[0].numpy()
    assert sr == SR and audio.shape == ref.shape
    assert np.abs(audio - np.clip(ref, -1, 1)).max() <= 1.5 / 32768  # 16-bit WAV


def test_decode_json_each_n_q(client, codec24, signal):
    body = _encode(client, wav_bytes(signal, SR), bandwidth=3.0).json()
    enc = codec24.encode(signal, SR, bandwidth=3.0)
    outs = []
    for k in range(1, body["n_q"] + 1):
        r = client.post("/v1/decode/json", params={"n_q": k}, json=body)
        assert r.status_code == 200, r.text
        audio, _ = read_wav(r.content)
        ref = np.clip(codec24.decode(enc, n_q=k)[0].numpy(), -1, 1)
        assert audio.shape == (1, signal.shape[-1])
        assert np.abs(audio - ref).max() <= 1.5 / 32768
        outs.append(audio)
    # n_q=1 reads the first codebook only: scrambling the others changes nothing
    rng = np.random.default_rng(0)
    body["codes"][1:] = rng.integers(0, 1024, (body["n_q"] - 1, body["frames"])).tolist()
    r = client.post("/v1/decode/json", params={"n_q": 1}, json=body)
    assert np.array_equal(read_wav(r.content)[0], outs[0])


def test_compress_decompress(client, codec24, signal):
    r = client.post(
        "/v1/compress", params={"bandwidth": 3.0}, files={"file": ("x.wav", wav_bytes(signal, SR))}
    )
    assert r.status_code == 200 and r.content[:4] == b"ECDC"
    from rvqkit.bitstream import decompress

    ref, _ = decompress(r.content, codec24)
    w = client.post("/v1/decompress", files={"file": ("x.ecdc", r.content)})
    assert w.status_code == 200, w.text
    audio, _ = read_wav(w.content)
    assert audio.shape == tuple(ref.shape)
    assert np.abs(audio - np.clip(ref.numpy(), -1, 1)).max() <= 1.5 / 32768


def _codes_body(client, signal):
    return _encode(client, wav_bytes(signal, SR), bandwidth=1.5).json()


@pytest.mark.parametrize(
    "case, status, kind",
    [
        ("garbage audio", 400, "bad_audio"),
        ("empty upload", 400, "bad_audio"),
        ("nan audio", 400, "bad_audio"),
        ("bad bandwidth", 400, "bad_bandwidth"),
        ("bad format", 422, "bad_request"),
        ("missing file", 422, "bad_request"),
        ("too large", 413, "too_large"),
        ("too long", 413, "too_large"),
        ("codes out of range", 400, "bad_codes"),
        ("ragged codes", 400, "bad_codes"),
        ("wrong model", 400, "bad_codes"),
        ("length vs frames", 400, "bad_codes"),
        ("n_q too large", 400, "bad_n_q"),
        ("npz n_q too large", 400, "bad_n_q"),
        ("wav to decode", 400, "bad_codes"),
        ("flat codes list", 422, "bad_request"),
        ("json not an object", 422, "bad_request"),
        ("npz garbage", 400, "bad_codes"),
        ("ecdc garbage", 400, "bad_codes"),
        ("unknown path", 404, "http_404"),
        ("wrong method", 405, "http_405"),
    ],
)
def test_bad_input_is_a_json_4xx(client, signal, case, status, kind):
    good = wav_bytes(signal, SR)
    post = client.post
    if case == "garbage audio":
        r = _encode(client, b"RIFF not really a wav file at all")
    elif case == "empty upload":
        r = _encode(client, b"")
    elif case == "nan audio":
        x = signal.copy()
        x[0, 100] = np.nan
        r = _encode(client, wav_bytes(x, SR))
    elif case == "bad bandwidth":
        r = _encode(client, good, bandwidth=7.0)
    elif case == "bad format":
        r = _encode(client, good, format="xml")
    elif case == "missing file":
        r = post("/v1/encode")
    elif case == "too large":
        r = _encode(client, b"\0" * 500_000)
    elif case == "too long":
        r = _encode(client, wav_bytes(np.zeros((1, 4 * 8000), np.float32), 8000, "PCM_16"))
    elif case.startswith(("codes", "ragged", "wrong model", "length", "n_q")):
        body = _codes_body(client, signal)
        params = {}
        if case == "codes out of range":
            body["codes"][0][3] = 1024
        elif case == "ragged codes":
            body["codes"][1] = body["codes"][1][:-1]
        elif case == "wrong model":
            body["model"] = "encodec_48khz"
        elif case == "length vs frames":
            body["length"] += 5 * 320
        else:
            params["n_q"] = 5
        r = post("/v1/decode/json", params=params, json=body)
    elif case == "npz n_q too large":
        npz = _encode(client, good, bandwidth=1.5, format="npz").content
        r = post("/v1/decode", params={"n_q": 3}, files={"file": ("c.npz", npz)})
    elif case == "wav to decode":
        r = post("/v1/decode", files={"file": ("c.npz", good)})
        assert "pickle" not in r.text and "looks like audio" in r.json()["message"]
    elif case == "flat codes list":
        body = _codes_body(client, signal)
        body["codes"] = [c for row in body["codes"] for c in row]
        r = post("/v1/decode/json", json=body)
    elif case == "json not an object":
        r = post("/v1/decode/json", content=b"[1, 2", headers={"content-type": "application/json"})
    elif case == "npz garbage":
        r = post("/v1/decode", files={"file": ("c.npz", b"PK\x03\x04 broken zip")})
    elif case == "ecdc garbage":
        r = post("/v1/decompress", files={"file": ("a.ecdc", b"ECDC\x00\x00\x00\x00\x05{}abc")})
    elif case == "unknown path":
        r = client.get("/v1/nothing")
    else:
        r = client.get("/v1/encode")
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == kind and body["message"]


def test_body_limit_without_content_length(client):
    """A chunked upload with no declared length is cut off at the limit too."""

    def chunks():
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="c.npz"\r\n\r\n'
        for _ in range(10):
            yield b"\0" * 100_000

    r = client.post(
        "/v1/decode", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_page_and_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert "/static/app.js" in html and "/static/style.css" in html
    assert "http://" not in html and "https://" not in html  # no CDN
    for asset in ("app.js", "style.css"):
        r = client.get(f"/static/{asset}")
        assert r.status_code == 200 and "https://" not in r.text
    for sneaky in (
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static//etc/passwd",
    ):
        r = client.get(sneaky)
        assert r.status_code == 404, sneaky
        assert "create_app" not in r.text and "root:" not in r.text


def test_client_filename_is_never_used(client, signal, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = client.post(
        "/v1/encode", files={"file": ("../../evil.wav", wav_bytes(signal, SR))}, params={"format": "npz"}
    )
    assert r.status_code == 200
    assert list(tmp_path.iterdir()) == []


def test_serve_command_is_registered():
    from typer.testing import CliRunner

    from rvqkit.cli import app, load_commands

    load_commands()
    r = CliRunner().invoke(app, ["serve", "--help"])
    assert r.exit_code == 0
    assert "--port" in r.output and "--host" in r.output and "127.0.0.1" in r.output


def test_json_error_for_internal_fault(codec24, monkeypatch):
    """A real fault is a JSON 500, not a traceback page."""
    app = create_app(codec24)
    monkeypatch.setattr(codec24, "stream_encoder", lambda *a, **k: 1 / 0)  # REST encodes in pieces
    with local_client(app, raise_server_exceptions=False) as c:
        r = _encode(c, wav_bytes(make_signal(4000, 1, SR), SR), bandwidth=1.5)
    assert r.status_code == 500 and r.json()["error"] == "internal"
    assert json.loads(r.text)["message"].startswith("internal server error")


def test_48k_encode_decode_json(codec48):
    codec = codec48
    x = make_signal(48000 + 700, 2, 48000, seed=4)
    with local_client(create_app(codec)) as c:
        body = _encode(c, wav_bytes(x, 48000), bandwidth=3.0).json()
        ref = codec.encode(x, 48000, bandwidth=3.0)
        assert torch.equal(torch.tensor(body["codes"]), ref.codes[0])
        assert body["scales"] == ref.scales[0].tolist() and len(body["scales"]) == 2
        r = c.post("/v1/decode/json", json=body)
        audio, sr = read_wav(r.content)
        assert sr == 48000 and audio.shape == (2, x.shape[-1])
        assert np.abs(audio - np.clip(codec.decode(ref)[0].numpy(), -1, 1)).max() <= 1.5 / 32768
        for scales in ([0.0, 1.0], [-1.0, 1.0], [1.0, float("inf")], [float("nan"), 1.0]):
            raw = json.dumps({**body, "scales": scales})  # NaN and Infinity as Python's json writes them
            bad = c.post("/v1/decode/json", content=raw, headers={"content-type": "application/json"})
            assert bad.status_code in (400, 422) and bad.json()["error"] in ("bad_codes", "bad_request")
            assert "scales" in bad.json()["message"]
        body["scales"] = body["scales"][:1]
        bad = c.post("/v1/decode/json", json=body)
        assert bad.status_code == 400 and "scale per segment" in bad.json()["message"]
