"""Corpus jobs against a hostile file system and process life: files vanishing or changing between runs,
special files and unreadable folders while listing, two jobs on one folder, a kill before the first
window ends, workers outliving their parent, and progress per encoded item."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import make_signal
from corpus_helpers import one_thread, read_output, write_clips  # noqa: F401 (one_thread: autouse fixture)

from rvqkit import Codec
from rvqkit.corpus import CorpusError, decode_corpus, encode_corpus
from rvqkit.corpus.lock import LOCK_NAME, JobLock
from rvqkit.corpus.shards import OutputDir, ShardLayout

pytest.importorskip("pyarrow")
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def codec24(hf_24k):
    return Codec.from_pretrained(hf_24k[1])


def errors_of(out: Path) -> dict[str, dict]:
    return {e["id"]: e for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}


class Interrupted(Exception):
    pass


def stop_after_first_shard(monkeypatch) -> None:
    """Make the next job stop (as a kill would) right after it has written its first shard."""
    real = OutputDir.write_shard

    def write_then_stop(self, *args, **kwargs):
        rec = real(self, *args, **kwargs)
        raise Interrupted(f"stopped after shard {rec['shard']}")

    monkeypatch.setattr(OutputDir, "write_shard", write_then_stop)


def test_shard_layout():
    layout = ShardLayout(10, 4, 2)
    assert layout.num_shards == 3
    assert [layout.bounds(k) for k in range(3)] == [(0, 2), (2, 6), (6, 10)]
    assert [layout.shard_of(i) for i in range(10)] == [0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert ShardLayout(9, 4, 4).num_shards == 3 and ShardLayout(0, 4, 2).num_shards == 0
    assert ShardLayout(2, 4, 2).num_shards == 1 and ShardLayout(3, 4, 2).num_shards == 2


def test_vanished_and_changed_files_become_errors_on_resume(codec24, tmp_path, monkeypatch):
    """Interrupted after the first shard; then one file is deleted, one rewritten, one deleted from the
    finished shard: the same call completes, the two files of unfinished shards are errors, every other
    row equals an uninterrupted run's."""
    folder = tmp_path / "audio"
    clips = write_clips(folder, 10, seed=3)
    common = dict(shard_size=4, first_shard_size=2, workers=0)
    reference = tmp_path / "reference"
    encode_corpus(folder, reference, codec24, 6.0, **common)
    want = read_output(reference)

    out = tmp_path / "out"
    stop_after_first_shard(monkeypatch)
    with pytest.raises(Interrupted, match="after shard 0"):
        encode_corpus(folder, out, codec24, 6.0, **common)
    monkeypatch.undo()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    ids = want["id"].to_pylist()  # the source order
    by_id = {p.relative_to(folder).with_suffix("").as_posix(): p for p in clips}
    done_id, vanished_id, changed_id = ids[0], ids[5], ids[8]  # shard 0; shards 1 and 2 not done
    by_id[done_id].unlink()  # its row is on disk already: kept
    by_id[vanished_id].unlink()
    sf.write(by_id[changed_id], make_signal(4000, 1, 16000, seed=99).T, 16000)  # other size

    summary = encode_corpus(folder, out, codec24, 6.0, **common)
    assert summary.shards_resumed == 1 and summary.manifest["status"] == "complete"
    errors = errors_of(out)
    assert set(errors) == {vanished_id, changed_id}
    assert errors[vanished_id]["reason"] == "vanished" and "gone" in errors[vanished_id]["message"]
    assert errors[changed_id]["reason"] == "changed" and "size" in errors[changed_id]["message"]
    assert errors[vanished_id]["path"] == str(by_id[vanished_id])
    got = read_output(out)
    keep = [i for i in ids if i not in errors]
    assert got["id"].to_pylist() == keep
    assert got.drop(["path"]).equals(want.filter(_isin(want, keep)).drop(["path"]))
    assert summary.counts["errors_by_reason"] == {"vanished": 1, "changed": 1}
    # a new file is not part of this job: refused, nothing touched
    sf.write(folder / "late.wav", make_signal(8000, 1, 16000).T, 16000)
    with pytest.raises(CorpusError, match="did not list when it started .*late.wav"):
        encode_corpus(folder, out, codec24, 6.0, **common)
    assert read_output(out).equals(got)


def _isin(table, ids):
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.is_in(table["id"], value_set=pa.array(ids))


def test_special_files_and_unreadable_folders_are_listed_not_opened(codec24, tmp_path, monkeypatch):
    folder = tmp_path / "audio"
    write_clips(folder, 3, seed=4)
    os.mkfifo(folder / "pipe.wav")  # opening it would block until a writer comes
    os.symlink(folder / "missing.flac", folder / "dangling.flac")
    locked = folder / "locked"
    locked.mkdir()
    sf.write(locked / "inside.wav", make_signal(8000, 1, 16000).T, 16000)
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anything: make the listing fail as it would for a user
        real = os.scandir

        def scandir(path="."):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(
        json.dumps({"path": str(folder / "pipe.wav"), "id": "p"})
        + "\n"
        + json.dumps({"path": str(next(folder.rglob("clip00.wav"))), "id": "ok"})
        + "\n"
    )
    try:
        start = time.monotonic()
        s = encode_corpus(folder, tmp_path / "out", codec24, 6.0, workers=1)
        m = encode_corpus(manifest, tmp_path / "out_m", codec24, 6.0, workers=0)
        assert time.monotonic() - start < 120  # generous: a FIFO opened would hang forever
    finally:
        locked.chmod(0o755)
    errors = errors_of(tmp_path / "out")
    assert {k: e["reason"] for k, e in errors.items()} == {
        "pipe": "special_file",
        "dangling": "broken_link",
        "locked/": "unreadable_folder",
    }
    assert "FIFO" in errors["pipe"]["message"] and "Permission denied" in errors["locked/"]["message"]
    assert s.counts["rows"] == 3 and s.counts["items"] == 6
    assert errors_of(tmp_path / "out_m") == {
        "p": {
            "id": "p",
            "path": str(folder / "pipe.wav"),
            "index": 0,
            "reason": "special_file",
            "message": errors["pipe"]["message"],
        }
    }
    assert m.counts["rows"] == 1


def test_loader_never_opens_a_fifo(tmp_path):
    """A path that turns into a FIFO after listing (or a dataset row naming one) is refused by stat."""
    from rvqkit.corpus.loading import LoadSpec, load_item

    os.mkfifo(tmp_path / "x.wav")
    got = load_item(0, str(tmp_path / "x.wav"), LoadSpec(24000, 1))
    assert got.reason == "special_file" and got.audio is None


HOLD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {src!r})
    from rvqkit.corpus.lock import JobLock
    lock = JobLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
    """
)


def test_lock_refuses_a_second_live_job_and_takes_over_a_dead_ones(codec24, hf_24k, tmp_path):
    folder = tmp_path / "audio"
    write_clips(folder, 2, seed=5)
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(src=SRC), str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            CorpusError, match=rf"in use by another rvqkit corpus job \(pid {holder.pid} on host"
        ):
            encode_corpus(folder, out, codec24, 6.0, workers=0)
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "rvqkit",
                "corpus",
                "encode",
                folder,
                out,
                "-m",
                hf_24k[1],
                "--workers",
                "0",
            ],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 1 and "Traceback" not in res.stderr
        # one error line (after the device line every model command prints)
        errors = [line for line in res.stderr.splitlines() if not line.startswith("device ")]
        assert len(errors) == 1 and f"pid {holder.pid}" in errors[0], res.stderr
        assert not (out / "manifest.json").exists()  # the second job touched nothing
    finally:
        holder.kill()
        holder.wait()
    notes: list[str] = []
    s = encode_corpus(folder, out, codec24, 6.0, workers=0, log=notes.append)
    assert s.counts["rows"] == 2
    assert len(notes) == 1 and f"pid {holder.pid}" in notes[0] and "did not finish" in notes[0]
    assert (out / LOCK_NAME).read_text() == ""  # released: the next job takes it quietly
    notes.clear()
    encode_corpus(folder, out, codec24, 6.0, workers=0, log=notes.append)
    assert notes == []
    # held in this process, another JobLock (another descriptor) is refused
    with JobLock(out), pytest.raises(CorpusError, match=f"pid {os.getpid()}"):
        JobLock(out).acquire()


def test_lock_file_does_not_make_a_folder_foreign(codec24, tmp_path):
    folder = tmp_path / "audio"
    write_clips(folder, 2, seed=6)
    out = tmp_path / "out"
    out.mkdir()
    JobLock(out).acquire().release()  # an empty lock file alone: still an empty folder
    encode_corpus(folder, out, codec24, 6.0, workers=0)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not empty"):
        encode_corpus(folder, foreign, codec24, 6.0, workers=0)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # no lock file left in it
    with pytest.raises(CorpusError, match="is a file, not a folder"):
        encode_corpus(folder, foreign / "notes.txt", codec24, 6.0, workers=0)


def test_first_shard_is_written_early_and_progress_counts_items(codec24, tmp_path):
    """A corpus under one window: the first shard is on disk while the job still runs, and progress
    moves in groups of lstm_batch items, not once per window."""
    folder = tmp_path / "audio"
    write_clips(folder, 20, seed=7, min_s=0.2, step_s=0.01)
    out = tmp_path / "out"
    seen = []

    def progress(p):
        seen.append((p.done, p.total, (out / "records" / "shard-00000.json").exists(), p.audio_seconds))

    s = encode_corpus(
        folder, out, codec24, 6.0, workers=0, shard_size=100, first_shard_size=5, lstm_batch=4,
        progress=progress,
    )  # fmt: skip
    assert s.manifest["first_shard_size"] == 5 and s.manifest["num_shards"] == 2
    assert seen[0][:2] == (0, 20) and seen[-1][:2] == (20, 20)
    done = [d for d, *_ in seen]
    assert done == sorted(done) and len(set(done)) >= 6  # 5 (2 calls) + 15 (4 calls of <= 4 items)
    assert max(b - a for a, b in zip(done, done[1:], strict=False)) <= 4
    assert any(first and d < 20 for d, _, first, _ in seen), "first shard not written before the end"
    rec = json.loads((out / "records" / "shard-00000.json").read_text())
    assert rec["rows"] == 5 and rec["first_index"] == 0
    rows = read_output(out)
    assert rows.num_rows == 20
    # the same rows as one-shard layout and one progress-free run: the layout changes nothing else
    other = tmp_path / "other"
    encode_corpus(folder, other, codec24, 6.0, workers=0, shard_size=100, first_shard_size=100, lstm_batch=4)
    assert read_output(other).equals(rows)
    # a resumed job keeps its own first shard size; another explicit one is refused
    again = encode_corpus(folder, out, codec24, 6.0, workers=0, shard_size=100, lstm_batch=4)
    assert again.shards_written == 0
    with pytest.raises(CorpusError, match="first_shard_size"):
        encode_corpus(folder, out, codec24, 6.0, workers=0, shard_size=100, first_shard_size=7, lstm_batch=4)


PARENT = textwrap.dedent(
    """
    import multiprocessing as mp, sys, time
    sys.path.insert(0, {src!r})
    from rvqkit.corpus.loading import LoadSpec
    from rvqkit.corpus.pipeline import iter_loaded
    from rvqkit.corpus.sources import open_source

    if __name__ == "__main__":
        src = open_source(sys.argv[1])
        loaded = iter_loaded(src, src.items, LoadSpec(24000, 1), workers=2, prefetch=2)
        next(loaded)
        print(" ".join(str(p.pid) for p in mp.active_children()), flush=True)
        time.sleep(600)
    """
)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_decoding_workers_exit_when_their_parent_is_killed(tmp_path):
    folder = tmp_path / "audio"
    write_clips(folder, 6, seed=8)
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(src=SRC))
    parent = subprocess.Popen([sys.executable, script, folder], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) >= 2 and all(_running(p) for p in workers)
        parent.kill()  # SIGKILL: no clean-up runs in the parent
        parent.wait()
        deadline = time.monotonic() + 10
        while any(_running(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(p) for p in workers), "a worker outlived its parent"
    finally:
        parent.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_decode_limit_skips_existing_outputs(codec24, tmp_path):
    folder = tmp_path / "audio"
    write_clips(folder, 5, seed=9)
    out = tmp_path / "out"
    encode_corpus(folder, out, codec24, 6.0, workers=0, shard_size=2)
    ids = read_output(out)["id"].to_pylist()
    listen = tmp_path / "listen"
    first = decode_corpus(out, listen, codec24, limit=2)
    assert first == [listen / f"{i}.wav" for i in ids[:2]]
    (listen / f"{ids[2]}.wav").write_bytes(b"mine")  # a file the user has: kept, skipped
    skipped: list[Path] = []
    second = decode_corpus(out, listen, codec24, limit=2, skipped=skipped.append)
    assert second == [listen / f"{i}.wav" for i in ids[3:5]]
    assert skipped == [listen / f"{i}.wav" for i in ids[:3]]
    assert (listen / f"{ids[2]}.wav").read_bytes() == b"mine"
    assert decode_corpus(out, listen, codec24, limit=2) == []
    res = subprocess.run(
        [sys.executable, "-m", "rvqkit", "corpus", "decode", out, listen, "--limit", "3"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "wrote 0 files" in res.stderr and "5 existing files skipped" in res.stderr
    audio, sr = sf.read(listen / f"{ids[0]}.wav")
    assert sr == 24000 and np.abs(audio).max() > 0


def test_cli_names_flags_not_parameters():
    from rvqkit.cli.messages import cli_message

    assert cli_message("shard_size must be at least 1, got 0") == "--shard-size must be at least 1, got 0"
    assert cli_message("x holds a job (encoded with lstm_batch=1); or overwrite=True to replace it") == (
        "x holds a job (encoded with --lstm-batch 1); or --overwrite to replace it"
    )
    assert cli_message("choose one with split=...") == "choose one with --split ..."
    assert (
        cli_message("give at least one token layout (tokens)") == "give at least one token layout (--tokens)"
    )
    assert cli_message("a window of 3 items; the split was fine") == "a window of 3 items; the split was fine"


def test_library_errors_name_parameters(codec24, tmp_path):
    for kwargs, name in (
        ({"shard_size": 0}, "shard_size"),
        ({"first_shard_size": 0}, "first_shard_size"),
        ({"window": 0}, "window"),
        ({"threads": 0}, "threads"),
        ({"max_duration": -1}, "max_duration"),
    ):
        with pytest.raises(CorpusError, match=rf"^{name} must be") as e:
            encode_corpus(tmp_path, tmp_path / "out", codec24, 6.0, **kwargs)
        assert "--" not in str(e.value)


def test_cli_message_renamed_flags():
    """Parameters whose flag is not their own name: ``lm`` is ``--lm-model``."""
    from rvqkit.cli.messages import cli_message

    assert cli_message("give its path as lm=PATH") == "give its path as --lm-model PATH"
    assert cli_message("(threads=N; Meta's tool") == "(--threads N; Meta's tool"
    assert cli_message("x.wav exists; pass overwrite=True to replace it") == (
        "x.wav exists; pass --overwrite to replace it"
    )
