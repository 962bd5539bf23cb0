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
