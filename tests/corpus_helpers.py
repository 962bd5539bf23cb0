"""Small audio corpora on disk for the corpus tests: short clips at several rates, channel counts and
formats, plus the kinds of bad item a real corpus has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from conftest import make_signal

RATES = (16000, 24000, 44100, 22050)


def write_clips(
    folder: Path, count: int, seed: int = 0, min_s: float = 0.2, step_s: float = 0.05
) -> list[Path]:
    """``count`` clips of ``min_s + step_s * i`` seconds, mono and stereo, WAV/FLAC/OGG/MP3, in two sub-folders.
    Clips 0 and 1 have the same length and rate (they share one model call)."""
    paths = []
    for i in range(count):
        sr = RATES[i % len(RATES)] if i > 1 else 24000
        seconds = min_s + step_s * max(i - 1, 0)
        fmt = (".wav", ".flac", ".ogg", ".mp3")[i % 4] if i > 1 else ".wav"
        sub = folder / ("speaker_b" if i % 2 else "speaker_a")
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"clip{i:02d}{fmt}"
        sf.write(path, make_signal(int(sr * seconds), 1 + i % 2, sr, seed=seed + i).T, sr)
        paths.append(path)
    return paths


def write_bad_items(folder: Path) -> dict[str, str]:
    """One file per failure reason; returns {id: reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "garbage.wav").write_bytes(b"RIFF but not really audio")
    sf.write(folder / "empty.wav", np.zeros((0, 1), dtype=np.float32), 16000)
    x = make_signal(8000, 1, 16000, seed=9)
    x[0, 100] = np.nan
    sf.write(folder / "nan.wav", x.T, 16000, subtype="FLOAT")
    sf.write(folder / "short.wav", make_signal(320, 1, 16000).T, 16000)  # 0.02 s
    sf.write(folder / "long.wav", make_signal(16000 * 2, 1, 16000).T, 16000)  # 2 s
    return {
        "bad/garbage": "unreadable",
        "bad/empty": "empty",
        "bad/nan": "nan",
        "bad/short": "too_short",
        "bad/long": "too_long",
    }


def read_output(out: Path) -> pa.Table:
    """All rows of a corpus output, sorted by source index."""
    table = pq.read_table(sorted((out / "data").glob("*.parquet")))
    return table.sort_by("index")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for these many small model calls: much faster on a busy machine, and the same
    numerics in every run compared here (in this process and in the CLI's --threads 1). Autouse in each
    corpus test module that imports it."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
