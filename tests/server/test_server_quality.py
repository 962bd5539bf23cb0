"""``POST /v1/quality`` (rvqkit.server.quality): per-k rows that equal the eval metrics of what
``/v1/decode/json?n_q=k`` returns against the upload at the model's rate, the clip cut to the cost cap,
every bad input a 4xx JSON error; and the page renders the table and each track's metrics."""

from __future__ import annotations

import io
import math
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_signal
from server_helpers import local_client, read_wav, wav_bytes

from rvqkit.audio import resample
from rvqkit.eval import metrics as M
from rvqkit.server import ServerSettings, create_app
from rvqkit.server.quality import QUALITY_MAX_S, QUALITY_METRICS, scored_samples

SR = 24000
WHOLE = {
    "si_sdr": lambda r, e, sr: M.si_sdr(r, e),
    "mel_distance": M.mel_distance,
    "stft_distance": M.stft_distance,
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: many small model calls, much faster on a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def client(codec24):
    # 10 s: 1 + 4 passes (3 kbps) over 1.3 s fit the cost cap, the whole clip is scored
    app = create_app(codec24, ServerSettings(max_upload_bytes=400_000, max_duration_s=10.0))
    with local_client(app) as c:
        yield c


def flac_bytes(x: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x.T, sr, format="FLAC")
    return buf.getvalue()


def post(client, data: bytes, **params):
    return client.post("/v1/quality", params=params, files={"file": ("x.wav", data, "audio/wav")})


def expected_rows(client, data: bytes, ref: np.ndarray, bandwidth: float) -> list[dict]:
    """Metrics computed here, whole-array, of what the page plays: /v1/encode, then
    /v1/decode/json?n_q=k for each k, against ``ref`` (the upload at the model's rate)."""
    codes = client.post(
        "/v1/encode", params={"bandwidth": bandwidth}, files={"file": ("x.wav", data, "audio/wav")}
    ).json()
    rows = []
    for k in range(1, codes["n_q"] + 1):
        r = client.post("/v1/decode/json", params={"n_q": k}, json=codes)
        assert r.status_code == 200, r.text
        est, sr = read_wav(r.content)
        assert est.shape == ref.shape
        rows.append({m: WHOLE[m](ref, est, sr) for m in QUALITY_METRICS})
    return rows


@pytest.mark.parametrize("sr_in, bandwidth", [(SR, 3.0), (16000, 1.5)])
def test_rows_equal_the_metrics_of_the_pages_audio(client, sr_in, bandwidth):
    x = make_signal(int(1.3 * sr_in) + 7, 1, sr_in, seed=4)
    data = wav_bytes(x, sr_in)
    r = post(client, data, bandwidth=bandwidth)
    assert r.status_code == 200, r.text
    body = r.json()
    n_q = {1.5: 2, 3.0: 4}[bandwidth]
    ref = resample(x, sr_in, SR) if sr_in != SR else x
    assert body["model"] == "encodec_24khz" and body["n_q"] == n_q and body["bandwidth"] == bandwidth
    assert body["seconds"] == body["scored_seconds"] == ref.shape[-1] / SR
    assert body["metrics"] == list(QUALITY_METRICS)
    assert body["higher_is_better"] == {"si_sdr": True, "mel_distance": False, "stft_distance": False}
    assert [row["k"] for row in body["rows"]] == list(range(1, n_q + 1))
    assert [row["kbps"] for row in body["rows"]] == [0.75 * k for k in range(1, n_q + 1)]
    want = expected_rows(client, data, ref, bandwidth)
    for row, w in zip(body["rows"], want, strict=True):
        assert row["skipped"] == ""
        for m in QUALITY_METRICS:
            assert math.isclose(row[m], w[m], rel_tol=1e-4, abs_tol=1e-6), (row, w)


def test_clip_cut_to_the_cost_cap(codec24):
    """Scoring is 1 + n_q passes of model work: with a per-request cap of 10 s of samples, 3 kbps
    (4 codebooks) scores the first 2 s of a 2.5 s upload."""
    app = create_app(codec24, ServerSettings(max_upload_bytes=400_000, max_job_samples=10 * SR))
    x = make_signal(int(2.5 * SR), 1, SR, seed=6)
    with local_client(app) as c:
        body = c.post(
            "/v1/quality", params={"bandwidth": 3.0}, files={"file": ("x.wav", wav_bytes(x, SR), "audio/wav")}
        ).json()
        assert body["seconds"] == 2.5 and body["scored_seconds"] == 2.0, body
        row = body["rows"][3]
        est = c.post("/v1/decode/json", params={"n_q": 4}, json=c.post(
            "/v1/encode", params={"bandwidth": 3.0},
            files={"file": ("x.wav", wav_bytes(x[:, : 2 * SR], SR), "audio/wav")},
        ).json())  # fmt: skip
        ref = x[:, : 2 * SR]
        assert math.isclose(row["si_sdr"], M.si_sdr(ref, read_wav(est.content)[0]), rel_tol=1e-4)


def test_scored_samples_bounds():
    s = ServerSettings(max_duration_s=600.0)
    assert scored_samples(10 * SR, 8, SR, s) == 10 * SR  # short: all of it
    assert scored_samples(500 * SR, 8, SR, s) == int(QUALITY_MAX_S * SR)  # long: the first 30 s
    assert scored_samples(500 * SR, 32, SR, s) == 600 * SR // 33  # 33 passes within the cap
    with pytest.raises(Exception, match="leaves none"):
        scored_samples(SR, 32, SR, ServerSettings(max_job_samples=20))


def test_silent_upload_reports_skips_not_numbers(client):
    r = post(client, wav_bytes(np.zeros((1, SR), np.float32), SR), bandwidth=1.5)
    assert r.status_code == 200, r.text
    for row in r.json()["rows"]:
        assert row["si_sdr"] is None and row["stft_distance"] is None
        assert "si_sdr: silent original" in row["skipped"]
        assert row["mel_distance"] is not None  # defined for silence


@pytest.mark.parametrize(
    "data, params, status, kind",
    [
        (b"not audio at all", {}, 400, "bad_audio"),
        (b"", {}, 400, "bad_audio"),
        ("ok", {"bandwidth": 5.0}, 400, "bad_bandwidth"),
        ("ok", {"bandwidth": "lots"}, 422, "bad_request"),
        ("long", {}, 413, "too_large"),  # 12 s > the 10 s limit, judged from the header
        ("low", {}, 400, "bad_audio"),  # 1000 Hz: under the minimum rate
        ("nan", {}, 400, "bad_audio"),
        ("big", {}, 413, "too_large"),  # over the upload limit
    ],
)
def test_bad_input_is_one_clear_error(client, data, params, status, kind):
    samples = {
        "ok": lambda: wav_bytes(make_signal(SR // 2, 1, SR), SR),
        "long": lambda: flac_bytes(np.zeros((1, 12 * SR), np.float32), SR),
        "low": lambda: wav_bytes(np.zeros((1, 1000), np.float32), 1000),
        "nan": lambda: wav_bytes(np.full((1, SR // 2), np.nan, np.float32), SR),
        "big": lambda: b"RIFF" + bytes(500_000),
    }
    if isinstance(data, str):
        data = samples[data]()
    r = post(client, data, **params)
    assert r.status_code == status, r.text
    assert r.json()["error"] == kind, r.json()
    assert "/tmp" not in r.json()["message"]  # the server's temporary paths are never shown


def test_missing_file_is_422(client):
    r = client.post("/v1/quality", params={"bandwidth": 1.5})
    assert r.status_code == 422 and r.json()["error"] == "bad_request"


def test_listed_in_openapi(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/quality" in paths and "post" in paths["/v1/quality"]


def test_48khz_stereo(codec48):
    # 4 s: 1 + 2 passes over 1.2 s fit the cost cap, the whole clip is scored
    app = create_app(codec48, ServerSettings(max_upload_bytes=2_000_000, max_duration_s=4.0))
    x = make_signal(int(1.2 * 48000), 2, 48000, seed=8)
    with local_client(app) as c:
        r = c.post(
            "/v1/quality",
            params={"bandwidth": 3.0},
            files={"file": ("x.wav", wav_bytes(x, 48000), "audio/wav")},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["channels"] == 2 and body["sample_rate"] == 48000 and body["n_q"] == 2
        assert body["scored_seconds"] == body["seconds"] == 1.2
        want = expected_rows(c, wav_bytes(x, 48000), x, 3.0)
    for row, w in zip(body["rows"], want, strict=True):
        for m in QUALITY_METRICS:
            assert math.isclose(row[m], w[m], rel_tol=1e-4, abs_tol=1e-6), (row, w)


# -- the page ---------------------------------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_page_shows_metrics_per_k(meta_24k, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    uvicorn = pytest.importorskip("uvicorn")
    from rvqkit import Codec

    app = create_app(Codec.from_pretrained(meta_24k[1]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    wav = tmp_path / "clip.wav"
    x = make_signal(SR + 123, 1, SR, seed=2)
    sf.write(wav, x.T, SR, subtype="FLOAT")
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(90_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#bandwidth option", state="attached")
            page.select_option("#bandwidth", "3")
            page.set_input_files("#file", str(wav))
            page.click("#run")
            page.wait_for_selector("body[data-state=done]")
            assert page.get_attribute("body", "data-quality") == "done"
            cells = page.eval_on_selector_all(
                "#quality-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
            )
            tracks = page.eval_on_selector_all(
                "#results .track",
                "rows => rows.map(r => [r.dataset.k, r.querySelector('.metrics').textContent])",
            )
            note = page.inner_text("#quality-note")
            shot = tmp_path / "server_quality.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert errors == []
    with local_client(create_app(Codec.from_pretrained(meta_24k[1]))) as c:
        body = c.post(
            "/v1/quality", params={"bandwidth": 3.0}, files={"file": ("x.wav", wav.read_bytes(), "audio/wav")}
        ).json()
    assert [c[0] for c in cells] == ["1", "2", "3", "4"]
    for row, shown in zip(body["rows"], cells, strict=True):
        assert shown[1:] == [
            f"{row['kbps']:.2f}",
            f"{row['si_sdr']:.2f}",
            f"{row['mel_distance']:.2f}",
            f"{row['stft_distance']:.3f}",
        ]
    assert tracks[0] == ["0", ""]  # the original has no metrics
    assert [t[0] for t in tracks[1:]] == ["1", "2", "3", "4"]
    for (_, text), row in zip(tracks[1:], body["rows"], strict=True):
        assert text.startswith(f"SI-SDR {row['si_sdr']:.2f} dB · log-mel {row['mel_distance']:.2f} dB")
    assert "all 1.01 s" in note
    if os.environ.get("RVQKIT_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["RVQKIT_SCREENSHOT_DIR"]) / shot.name)
