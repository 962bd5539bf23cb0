"""The CLI reproductions of issue 20's Low and Medium lists: every one is a classified rvqkit error (one
line, exit 1, never "unexpected ...", never a traceback, never a left-over temporary file), or a correct
result (64-channel input)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_signal
from typer.testing import CliRunner

from rvqkit import Codec
from rvqkit.audio import MIN_SAMPLE_RATE, AudioWriter
from rvqkit.errors import AudioError, OutputError


def run(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "RVQKIT_DEBUG"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "rvqkit", *map(str, args)], capture_output=True, text=True, env=full_env
    )


def assert_clean_error(res: subprocess.CompletedProcess, *patterns: str) -> None:
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "unexpected" not in res.stderr, res.stderr
    assert res.stderr.count("error:") == 1, res.stderr
    for p in patterns:
        assert p in res.stderr, res.stderr


def leftovers(folder: Path) -> list[str]:
    """Temporary files (``.name.part``, ``name.tmp-PID``) left in ``folder``."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".part") or ".tmp-" in p.name]


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "in.wav"
    sf.write(path, make_signal(24000, 1, 24000).T, 24000, subtype="PCM_16")
    return path


def test_folder_as_input_or_output(hf_24k, wav, tmp_path):
    _, folder = hf_24k
    d = tmp_path / "adir"
    d.mkdir()
    assert_clean_error(run("roundtrip", d, tmp_path / "o.wav", "-m", folder), f"{d} is a folder")
    assert_clean_error(run("compress", d, tmp_path / "o.ecdc", "-m", folder), f"{d} is a folder")
    assert_clean_error(run("decompress", d, tmp_path / "o.wav", "-m", folder), f"{d} is a folder")
    assert_clean_error(run("decode", d, tmp_path / "o.wav", "-m", folder), f"{d} is a folder")
    # a folder as the output, with or without --overwrite
    assert_clean_error(run("roundtrip", wav, d, "-m", folder, "--overwrite"), f"output {d} is a folder")
    assert_clean_error(run("compress", wav, d, "-m", folder), f"output {d} is a folder")
    assert list(d.iterdir()) == [] and leftovers(tmp_path) == []


def test_unwritable_output_and_symlink_loops(hf_24k, wav, tmp_path):
    _, folder = hf_24k
    # /proc/self refuses new files even to root (a chmod'ed folder would not stop root)
    assert_clean_error(
        run("roundtrip", wav, "/proc/self/out.wav", "-m", folder), "cannot write", "permission denied"
    )
    assert_clean_error(run("compress", wav, "/proc/self/out.ecdc", "-m", folder), "permission denied")
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)
    assert_clean_error(run("roundtrip", loop, tmp_path / "o.wav", "-m", folder), "symlink loop")
    # a looping link as the output is something that exists: kept unless --overwrite
    assert_clean_error(run("roundtrip", wav, loop, "-m", folder), "exists; pass --overwrite")
    assert loop.is_symlink() and leftovers(tmp_path) == []


def test_debug_shows_the_cause(hf_24k, tmp_path):
    _, folder = hf_24k
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)
    res = run("roundtrip", loop, tmp_path / "o.wav", "-m", folder, env={"RVQKIT_DEBUG": "1"})
    assert res.returncode == 1
    assert "OSError" in res.stderr and "direct cause" in res.stderr and "InputError" in res.stderr
    assert res.stderr.rstrip().splitlines()[-1].startswith("error:")


def test_debug_shows_the_cause_of_a_bad_codes_file(tmp_path):
    """Library re-raises keep their cause (``raise ... from e``): the zip error shows under RVQKIT_DEBUG."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04garbage")
    res = run("decode", bad, tmp_path / "o.wav", "-m", "random-24khz", env={"RVQKIT_DEBUG": "1"})
    assert res.returncode == 1
    assert "BadZipFile" in res.stderr and "direct cause" in res.stderr and "CodesError" in res.stderr
    quiet = run("decode", bad, tmp_path / "o.wav", "-m", "random-24khz")
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr


def test_zero_sample_audio(hf_24k, codec24, tmp_path):
    """10 samples at 1 MHz resample to 0 samples at 24 kHz: a clean error on every path, no empty WAV."""
    _, folder = hf_24k
    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, np.full((10, 1), 0.1, np.float32), 1_000_000, subtype="PCM_16")
    out = tmp_path / "o.wav"
    for cmd, target in (
        ("roundtrip", out),
        ("encode", tmp_path / "c.npz"),
        ("compress", tmp_path / "c.ecdc"),
    ):
        assert_clean_error(run(cmd, tiny, target, "-m", folder), "resample to 0 samples")
        assert not target.exists()
    assert_clean_error(run("tokens", tiny, "-m", folder), "resample to 0 samples")
    with pytest.raises(AudioError, match="0 samples"):
        codec24.encode(np.full(10, 0.1, np.float32), 1_000_000)
    assert leftovers(tmp_path) == []


def test_low_rate_refused_quickly(hf_24k, codec24, tmp_path):
    """A 1.2 KB WAV at 1 Hz (600 s) once took 10 GB; now the header's rate is refused before any work."""
    _, folder = hf_24k
    slow = tmp_path / "slow.wav"
    sf.write(slow, np.zeros((600, 1), np.float32), 1, subtype="PCM_16")
    for cmd, target in (("roundtrip", "o.wav"), ("encode", "c.npz"), ("compress", "c.ecdc")):
        start = time.monotonic()
        res = run(cmd, slow, tmp_path / target, "-m", folder)
        assert time.monotonic() - start < 60  # generous: about denial of service, not speed
        assert_clean_error(res, f"sample_rate must be at least {MIN_SAMPLE_RATE} Hz, got 1")
    assert_clean_error(run("inspect", slow, "-m", folder), "sample_rate must be at least")
    assert_clean_error(run("tokens", slow, "-m", folder), "sample_rate must be at least")
    res = subprocess.run(
        [sys.executable, "-m", "rvqkit", "stream", "-", "-m", folder, "--rate", "1"],
        input=b"\0\0" * 600,
        capture_output=True,
        text=False,
    )
    assert res.returncode == 1 and b"--rate must be at least 4000 Hz" in res.stderr
    with pytest.raises(AudioError, match="sample_rate must be at least 4000 Hz"):
        codec24.encode(np.zeros(600, np.float32), 1)
    codec24.encode(np.zeros(400, np.float32), MIN_SAMPLE_RATE)  # the minimum itself is fine


def test_rich_markup_in_paths(hf_24k, tmp_path):
    _, folder = hf_24k
    # a closing tag that matches nothing made Rich raise while printing the error
    res = run("roundtrip", tmp_path / "a[/x].wav", tmp_path / "o.wav", "-m", folder)
    assert_clean_error(res, "a[/x].wav: no such audio file")
    # a name that looks like a style tag was printed without it
    remix = tmp_path / "song [remix].wav"
    sf.write(remix, make_signal(4800, 1, 24000).T, 24000, subtype="PCM_16")
    out = tmp_path / "out [remix].wav"
    res = run("roundtrip", remix, out, "-m", folder)
    assert res.returncode == 0, res.stderr
    assert f"wrote {out}" in res.stderr.replace("\n", "")
    assert_clean_error(run("roundtrip", remix, out, "-m", folder), f"{out} exists")


def test_64_channels_through_every_command(hf_24k, tmp_path):
    """64 channels are averaged to mono on every path (as ``encode`` did), never refused."""
    _, folder = hf_24k
    codec = Codec.from_pretrained(folder)
    x = make_signal(12000, 64, 24000)
    many = tmp_path / "many.wav"
    sf.write(many, x.T, 24000, subtype="FLOAT")
    ref = codec.encode(x, 24000, bandwidth=6)  # the API: no transpose hint for a real 64-channel array
    mono = codec.encode(x.mean(axis=0), 24000, bandwidth=6)
    assert torch.equal(ref.codes, mono.codes)

    res = run("compress", many, tmp_path / "m.ecdc", "-m", folder)
    assert res.returncode == 0, res.stderr
    from rvqkit.bitstream import read_ecdc

    with open(tmp_path / "m.ecdc", "rb") as f:
        assert torch.equal(read_ecdc(f).codes, ref.codes)
    res = run("tokens", many, "-m", folder, "--out", tmp_path / "t.npz")
    assert res.returncode == 0, res.stderr
    res = run("encode", many, tmp_path / "m.npz", "-m", folder)
    assert res.returncode == 0, res.stderr
    # the one ambiguous shape: more rows than columns is [samples, channels]
    with pytest.raises(AudioError, match="transpose"):
        codec.encode(x[:2].T, 24000)


# -- failures in the middle of writing (in process, with the writes made to fail) ------------------------
def test_audio_writer_full_disk_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "o.wav"
    w = AudioWriter(target, 24000, 1)

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(w._file, "write", full)
    with pytest.raises(OutputError, match="disk is full"), w:
        w.write(np.zeros((1, 100), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_compress_full_disk_leaves_nothing(hf_24k, wav, tmp_path, monkeypatch):
    from rvqkit import compress as bitstream
    from rvqkit.cli import app, load_commands

    _, folder = hf_24k
    load_commands()

    def full(fileobj, *_: object, **__: object) -> int:
        fileobj.write(b"ECDC partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bitstream, "compress_file", full)
    out = tmp_path / "o.ecdc"
    res = CliRunner().invoke(app, ["compress", str(wav), str(out), "-m", str(folder)])
    assert res.exit_code == 1, res.output
    assert "disk is full" in res.output and "unexpected" not in res.output
    assert list(tmp_path.iterdir()) == []


def test_decompress_truncated_leaves_nothing(hf_24k, wav, tmp_path):
    _, folder = hf_24k
    ecdc = tmp_path / "a.ecdc"
    assert run("compress", wav, ecdc, "-m", folder).returncode == 0
    cut = tmp_path / "cut.ecdc"
    cut.write_bytes(ecdc.read_bytes()[:-20])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_clean_error(run("decompress", cut, out_dir / "o.wav", "-m", folder), "truncated")
    assert list(out_dir.iterdir()) == []
