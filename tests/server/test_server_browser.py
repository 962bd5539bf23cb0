"""The browser page in a real headless Chromium (Debian's ``chromium``), driven by Playwright: load the
page, upload a WAV, get a reconstruction for every k codebooks, check each audio element holds
decodable audio of the right length, drawn waveforms and spectrograms, run the live mode on Chromium's
fake microphone, and save a screenshot (to ``$RVQKIT_SCREENSHOT_DIR`` if set, else pytest's tmp dir)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import make_signal
from server_helpers import wav_bytes

from rvqkit import Codec
from rvqkit.server import create_app

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
uvicorn = pytest.importorskip("uvicorn")

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
    "--use-fake-device-for-media-stream",  # a synthetic microphone (a beep)
    "--autoplay-policy=no-user-gesture-required",
]
SR = 24000


@pytest.fixture(scope="module")
def server_url(meta_24k):
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
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(server_url):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(60_000)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        pg.goto(server_url + "/")
        pg.js_errors = errors  # type: ignore[attr-defined]
        yield pg
        browser.close()


DECODE_JS = """async (el) => {
  const data = await (await fetch(el.src)).arrayBuffer();
  const ac = new OfflineAudioContext(1, 1, RATE);   // decode at the model rate: no resampling
  const buf = await ac.decodeAudioData(data);
  const x = buf.getChannelData(0);
  let e = 0; for (const v of x) e += v * v;
  return {length: buf.length, rate: buf.sampleRate, rms: Math.sqrt(e / x.length),
          duration: el.duration, readyState: el.readyState};
}""".replace("RATE", str(SR))

CANVAS_JS = """(c) => {
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  let drawn = 0;
  for (let i = 0; i < d.length; i += 4) {
    seen.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]);
    if (d[i] !== 17 || d[i + 1] !== 17 || d[i + 2] !== 17) drawn++;  // 17: the #111 background
  }
  return {colors: seen.size, drawn: drawn / (d.length / 4)};
}"""


def test_upload_and_reconstructions(page, tmp_path):
    n = SR + 321
    wav = tmp_path / "speechlike.wav"
    wav.write_bytes(wav_bytes(make_signal(n, 1, SR, seed=2), SR, "PCM_16"))
    page.wait_for_selector("#bandwidth option", state="attached")
    assert "encodec_24khz" in page.inner_text("#model")
    page.select_option("#bandwidth", "3")
    page.set_input_files("#file", str(wav))
    page.click("#run")
    page.wait_for_selector("body[data-state=done]", timeout=90_000)
    assert page.get_attribute("body", "data-length") == str(n)
    rows = page.query_selector_all(".track")
    assert [r.get_attribute("data-k") for r in rows] == ["0", "1", "2", "3", "4"]  # original + k = 1..4
    for row in rows[1:]:
        audio = row.query_selector("audio")
        page.wait_for_function("(a) => a.readyState >= 1", arg=audio)
        got = audio.evaluate(DECODE_JS)
        assert got["rate"] == SR and got["length"] == n, got  # decodable audio of the right length
        assert abs(got["duration"] - n / SR) < 1e-3, got
        assert got["rms"] > 1e-4, got  # not silence
        assert row.get_attribute("data-samples") == str(n)
        wave = row.query_selector("canvas.wave").evaluate(CANVAS_JS)
        spec = row.query_selector("canvas.spec").evaluate(CANVAS_JS)
        assert wave["drawn"] > 0.02, wave  # a waveform was drawn
        assert spec["drawn"] > 0.9 and spec["colors"] > 50, spec  # a spectrogram fills its canvas
    assert "Done: 4 reconstructions" in page.inner_text("#status")
    assert page.js_errors == []  # type: ignore[attr-defined]
    shot = tmp_path / "server_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("RVQKIT_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["RVQKIT_SCREENSHOT_DIR"]) / shot.name)


def test_bad_upload_shows_the_servers_error(page, tmp_path):
    bad = tmp_path / "notaudio.wav"
    bad.write_bytes(b"this is not audio")
    page.set_input_files("#file", str(bad))
    page.click("#run")
    page.wait_for_selector("body[data-state=error]")
    status = page.inner_text("#status")
    assert "400 bad_audio" in status and "cannot read the uploaded audio" in status


def test_live_mode_streams_the_microphone(page, tmp_path):
    page.select_option("#bandwidth", "1.5")
    page.click("#live-start")
    page.wait_for_function("() => document.body.dataset.liveLatency !== undefined", timeout=30_000)
    page.wait_for_function("() => Number(document.getElementById('live-frames').textContent) > 50")
    latency = float(page.get_attribute("body", "data-live-latency"))
    assert 0 < latency < 5000
    assert page.inner_text("#latency").endswith("ms")
    page.screenshot(path=str(tmp_path / "server_live.png"))
    page.click("#live-stop")
    assert page.is_enabled("#live-start")
    assert page.js_errors == []  # type: ignore[attr-defined]
    if os.environ.get("RVQKIT_SCREENSHOT_DIR"):
        shutil.copy(
            tmp_path / "server_live.png", Path(os.environ["RVQKIT_SCREENSHOT_DIR"]) / "server_live.png"
        )
