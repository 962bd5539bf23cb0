"""The model commands outside cli/codec.py (``corpus encode``/``decode``, ``serve``, ``eval``) take the
shared ``--device`` (default ``auto``) and ``--threads`` (default: the physical cores), load and announce
the model as every other command does, and show their flags in ``--help`` without a ``<bool>``."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

COMMANDS = (("corpus", "encode"), ("corpus", "decode"), ("serve",), ("eval",))


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rvqkit", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def auto_line(threads: int) -> str:
    """The device line ``--device auto`` gives on this machine."""
    if torch.cuda.is_available():
        return "device cuda"
    return f"device cpu (auto: no CUDA GPU), {threads} CPU thread{'s' * (threads != 1)}"


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(d / f"a{i}.wav", rng.normal(0, 0.1, 16000 + 500 * i).astype(np.float32), 16000)
    return d


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_shared_options_and_no_bool(command):
    res = run(*command, "--help")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    device = next(line for line in lines if "--device" in line)
    assert "[default: auto]" in device, device
    threads = next(line for line in lines if "--threads" in line)
    assert "physical cores" in threads, threads
    # typer prints "<bool>" after every flag it is not told otherwise about; ours say metavar=""
    # (typer's own --help still does: not ours to change)
    ours = [line for line in lines if "<bool>" in line and "--help" not in line]
    assert ours == [], ours


def test_stats_flags_have_no_bool():
    res = run("corpus", "stats", "--help")
    assert res.returncode == 0, res.stderr
    assert [line for line in res.stdout.splitlines() if "<bool>" in line and "--help" not in line] == []


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_threads_below_one_is_a_usage_error(command, tmp_path):
    args = {
        "corpus encode": ["src", tmp_path / "out"],
        "corpus decode": [tmp_path, tmp_path / "dec"],
        "serve": [],
        "eval": ["x.wav", "--out", tmp_path / "r"],
    }[" ".join(command)]
    res = run(*command, *args, "--threads", "0")
    assert res.returncode == 2, res.stderr
    assert "--threads" in res.stderr and "Traceback" not in res.stderr


def test_corpus_encode_and_decode_use_auto_device_and_threads(audio_dir, tmp_path):
    out = tmp_path / "out"
    res = run("corpus", "encode", audio_dir, out, "-m", "random-24khz", "--threads", "1", "--workers", "0")
    assert res.returncode == 0, res.stderr
    assert "RANDOM WEIGHTS" in res.stderr  # loaded through the shared load_codec
    assert auto_line(1) in res.stderr, res.stderr
    assert "2 rows" in res.stderr, res.stderr
    dec = tmp_path / "dec"
    res = run("corpus", "decode", out, dec, "--threads", "1", "--limit", "1")
    assert res.returncode == 0, res.stderr
    assert auto_line(1) in res.stderr, res.stderr
    assert len(list(dec.glob("*.wav"))) == 1


def test_eval_uses_auto_device_and_threads(audio_dir, tmp_path):
    res = run(
        "eval", audio_dir / "a0.wav", "--out", tmp_path / "r", "-m", "random-24khz", "--threads", "1",
        "--workers", "0", "--bandwidth", "1.5", "--n-q", "1", "--no-baselines", "--no-plots",
        "--lm-items", "0", "--examples", "0",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert auto_line(1) in res.stderr, res.stderr
    assert (tmp_path / "r" / "report.json").is_file()


def test_serve_uses_shared_load_codec_and_threads(monkeypatch):
    """In-process (no port is opened): ``uvicorn.run`` is replaced by a recorder."""
    uvicorn = pytest.importorskip("uvicorn")
    from rvqkit.cli import app, load_commands

    load_commands()
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kw: served.update(app=app_, **kw))
    before = torch.get_num_threads()
    try:
        res = CliRunner().invoke(app, ["serve", "-m", "random-24khz", "--threads", "1", "--port", "8123"])
        threads_in_serve = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    assert threads_in_serve == 1
    assert served["port"] == 8123 and served["app"].state.codec.name == "encodec_24khz"
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert served["app"].state.codec.device.type == want
