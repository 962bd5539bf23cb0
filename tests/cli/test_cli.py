"""End-to-end CLI on a real WAV file with a model folder written by the tests; bad input gives one
line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_signal

from rvqkit import Codec, Encoded


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rvqkit", *map(str, args)], capture_output=True, text=True)


def assert_clean_error(res: subprocess.CompletedProcess, pattern: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert pattern in res.stderr, res.stderr


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    sf.write(path, make_signal(36800, 2, 16000).T, 16000, subtype="PCM_16")  # 16 kHz stereo
    return path


def test_roundtrip_encode_decode_info(hf_24k, wav, tmp_path):
    _, folder = hf_24k
    out = tmp_path / "out.wav"
    res = run("roundtrip", wav, out, "--model", folder, "--bandwidth", "6")
    assert res.returncode == 0, res.stderr
    audio, sr = sf.read(out)
    assert sr == 24000 and audio.shape == (55200,)

    codes = tmp_path / "codes.npz"
    assert run("encode", wav, codes, "-m", folder, "-b", "3").returncode == 0
    enc = Encoded.load(codes)
    assert enc.n_q == 4 and enc.model == "encodec_24khz"
    # the file's codes are the API's codes for the same audio
    x, file_sr = sf.read(wav, dtype="float32", always_2d=True)
    api = Codec.from_pretrained(folder).encode(x.T, file_sr, bandwidth=3)
    assert torch.equal(api.codes, enc.codes)

    coarse = tmp_path / "coarse.wav"
    res = run("decode", codes, coarse, "-m", folder, "--n-q", "2")
    assert res.returncode == 0, res.stderr
    assert sf.info(coarse).frames == 55200

    res = run("info", "-m", folder)
    assert res.returncode == 0 and "24000 Hz" in res.stdout and "1.5 kbps (2 codebooks)" in res.stdout


def test_bad_inputs(hf_24k, hf_48k, wav, tmp_path):
    _, folder = hf_24k
    _, folder48 = hf_48k
    out = tmp_path / "o.wav"
    assert_clean_error(run("roundtrip", tmp_path / "missing.wav", out, "-m", folder), "no such audio file")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF0000WAVEjunk")
    assert_clean_error(run("roundtrip", junk, out, "-m", folder), "cannot read audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1)), 24000)
    assert_clean_error(run("roundtrip", empty, out, "-m", folder), "empty")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full((100, 1), np.nan, dtype=np.float32), 24000, subtype="FLOAT")
    assert_clean_error(run("roundtrip", nan, out, "-m", folder), "NaN")
    res = run("roundtrip", wav, out, "-m", folder, "-b", "5")
    assert_clean_error(res, "valid bandwidths (kbps): 1.5, 3, 6, 12, 24")
    assert_clean_error(run("roundtrip", wav, out, "-m", tmp_path / "nowhere"), "no such file")
    assert not out.exists()

    codes = tmp_path / "c.npz"
    assert run("encode", wav, codes, "-m", folder).returncode == 0
    assert_clean_error(run("encode", wav, codes, "-m", folder), "exists; pass --overwrite")
    assert_clean_error(run("decode", codes, out, "-m", folder48), "made by encodec_24khz")
    assert_clean_error(run("decode", codes, out, "-m", folder, "--n-q", "9"), "--n-q must be between 1 and 8")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(codes.read_bytes()[:200])
    assert_clean_error(run("decode", corrupt, out, "-m", folder), "not a readable")
    res = run("roundtrip", wav, out, "-m", folder, "--bandwidth", "fast")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_nothing_overwritten_without_asking(hf_24k, wav, tmp_path):
    _, folder = hf_24k
    out = tmp_path / "keep.wav"
    out.write_bytes(b"precious")
    assert_clean_error(run("roundtrip", wav, out, "-m", folder), "exists")
    assert out.read_bytes() == b"precious"
    assert run("roundtrip", wav, out, "-m", folder, "--overwrite").returncode == 0
    assert_clean_error(run("roundtrip", wav, wav, "-m", folder, "--overwrite"), "same file as an input")
