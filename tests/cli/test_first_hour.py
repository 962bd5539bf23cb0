"""A new user's first hour (issue 21): --version, clean --help, the random model end to end without a
download, codes refused with other weights unless --force, roundtrip's quality line, no stray progress
line before an error, and the hint an LM-coded stream gives when it cannot be decoded."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import soundfile as sf
import torch
from conftest import make_signal

from rvqkit import Codec, Encoded


def run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "rvqkit", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    sf.write(path, make_signal(16000 * 2, 1, 16000).T, 16000, subtype="PCM_16")
    return path


def test_version_and_help_without_bool_placeholders():
    from rvqkit import __version__

    res = run("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"rvqkit {__version__}"
    for command in ("roundtrip", "decode", "compress", "tokens", "inspect", "stream"):
        res = run(command, "--help")
        assert res.returncode == 0, res.stderr
        flags = [line for line in res.stdout.splitlines() if "--overwrite" in line or "--json" in line]
        flags += [line for line in res.stdout.splitlines() if "--force" in line or "--decode " in line]
        assert all("<bool>" not in line for line in flags), flags
        assert "--threads" in res.stdout and "--device" in res.stdout, command


def test_random_model_end_to_end_and_weights_check(wav, tmp_path):
    out = tmp_path / "out.wav"
    res = run("roundtrip", wav, out, "--model", "random-24khz", "--threads", "1")
    assert res.returncode == 0, res.stderr
    assert "RANDOM WEIGHTS: THE AUDIO WILL BE NOISE" in res.stderr
    assert "device cpu" in res.stderr and "1 CPU thread" in res.stderr
    assert "SI-SDR" in res.stderr and "log-mel distance" in res.stderr
    assert sf.info(out).frames == 48000

    codes = tmp_path / "codes.npz"
    assert run("encode", wav, codes, "-m", "random-24khz").returncode == 0
    assert Encoded.load(codes).weights_sha256 == Codec.from_pretrained("random-24khz").weights_sha256
    # codes that record other weights of the same architecture: refused, then decoded when forced
    other = tmp_path / "other"
    enc = Encoded.load(codes)
    enc.weights_sha256 = "0" * 64
    enc.save(other.with_suffix(".npz"))
    res = run("decode", other.with_suffix(".npz"), tmp_path / "d.wav", "-m", "random-24khz")
    assert res.returncode == 1 and "made with other weights" in res.stderr and "--force" in res.stderr
    assert not (tmp_path / "d.wav").exists()
    res = run("decode", other.with_suffix(".npz"), tmp_path / "d.wav", "-m", "random-24khz", "--force")
    assert res.returncode == 0 and "decoding anyway" in res.stderr, res.stderr
    assert run("decode", codes, tmp_path / "same.wav", "-m", "random-24khz").returncode == 0


def test_no_progress_line_before_an_early_error(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF0000WAVEjunk")
    res = run("roundtrip", junk, tmp_path / "o.wav", "-m", "random-24khz")
    assert res.returncode == 1
    assert "roundtrip" not in res.stderr and "s audio" not in res.stderr  # no bar was drawn
    assert res.stderr.strip().startswith("error:") and "\n\n" not in res.stderr


def test_lm_stream_that_cannot_be_decoded_names_threads():
    """A truncated LM-coded stream must fail; the error names the thread count and the fix."""
    from rvqkit.bitstream import BitstreamError, read_ecdc, write_ecdc
    from rvqkit.lm import EntropyLM, LMConfig

    codec = Codec.from_pretrained("random-24khz")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lm = EntropyLM(LMConfig.for_codec(codec.config)).eval()
    encoded = codec.encode(make_signal(24000, 1, 24000), 24000, bandwidth=1.5)
    buf = io.BytesIO()
    write_ecdc(buf, encoded, lm=lm)
    data = buf.getvalue()
    with pytest.raises(BitstreamError) as info:
        read_ecdc(io.BytesIO(data[: len(data) // 2]), lm=lm)
    msg = str(info.value)
    assert f"on {torch.get_num_threads()} threads" in msg and "threads=N" in msg, msg
    # the command line names its flag instead of the library parameter
    from rvqkit.cli.messages import cli_message

    assert "--threads N" in cli_message(msg) and "threads=N" not in cli_message(msg)
