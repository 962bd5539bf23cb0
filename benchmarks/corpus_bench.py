"""Corpus encoding speed: a naive per-file ``transformers.EncodecModel`` loop vs ``rvqkit corpus encode``.

Generates a seeded corpus (WAV / FLAC / OGG / MP3 written by soundfile; 16, 22.05, 44.1 and 48 kHz; mono
and stereo; durations uniform in ``[1, --max-seconds]`` s), builds ONE random-weight 24 kHz model saved as a
Hugging Face folder, and times, on the same corpus and weights:

(a) a naive loop: per file ``soundfile.read`` → mono mix → soxr to 24 kHz → ``EncodecModel.encode(...,
    bandwidth=6.0)`` under ``torch.inference_mode()``, torch's default threads, model loaded beforehand;
(b) ``rvqkit corpus encode CORPUS OUT --model HF_FOLDER --bandwidth 6`` (a subprocess, default settings);
(c) the same with ``--engine ray`` (a local Ray instance started by the command);
optionally (``--methods abc1``) (a1): loop (a) with ``torch.set_num_threads(1)``, to show how much of the
difference is torch threads competing for busy cores; and (``--methods abcm``) (m): rvqkit's model alone
on audio decoded beforehand, the floor under (b) on the machine.

Wall seconds of (b) and (c) are the whole command (Python start-up, model loading, Ray start-up included);
the table also gives the pipeline's own time (its summary line's RTF × audio seconds). Then the codes of
(b) and (c) are compared with (a)'s, frame by frame, for every file.

    python benchmarks/corpus_bench.py                                # the issue's 300 files of 1-30 s
    python benchmarks/corpus_bench.py --files 40 --max-seconds 10    # a reduced run

Prints a markdown report and saves it to ``benchmarks/results/corpus_<UTC date>.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BANDWIDTH = 6.0  # kbps
MODEL_RATE = 24000  # Hz
SEED = 2026

#: extension → (soundfile format, subtype)
FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),  # needs libsndfile >= 1.1
}
RATES = (16000, 22050, 44100, 48000)  # Hz


# -- corpus ------------------------------------------------------------------------------------------------
def writable_formats() -> dict[str, tuple[str, str]]:
    """The formats of :data:`FORMATS` this soundfile / libsndfile build can write."""
    have = sf.available_formats()
    return {
        ext: (fmt, sub)
        for ext, (fmt, sub) in FORMATS.items()
        if fmt in have and sub in sf.available_subtypes(fmt)
    }


def make_signal(n: int, channels: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Speech-like test audio ``[n, channels]`` float32: a gliding tone with harmonics, amplitude-modulated
    at a syllable rate, plus noise; peak about 0.5."""
    t = np.arange(n) / sr
    out = []
    for _ in range(channels):
        f0 = 100 + 150 * rng.random() + 30 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, 6))
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 2 * np.pi))
        x = 0.2 * x * env + 0.03 * rng.standard_normal(n)
        out.append(x)
    return np.stack(out, axis=1).astype(np.float32)


def generate_corpus(folder: Path, files: int, min_s: float, max_s: float, seed: int) -> list[Path]:
    """Write ``files`` seeded audio files into ``folder`` (which must be empty or absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        sys.exit(f"{folder} is not empty: give an empty or new folder to --corpus")
    formats = writable_formats()
    missing = sorted(set(FORMATS) - set(formats))
    if missing:
        print(
            f"note: this libsndfile ({sf.__libsndfile_version__}) cannot write {missing}; skipped",
            file=sys.stderr,
        )
    rng = np.random.default_rng(seed)
    exts = sorted(formats)
    paths = []
    for i in range(files):
        ext = exts[rng.integers(len(exts))]
        sr = int(RATES[rng.integers(len(RATES))])
        ch = int(rng.integers(1, 3))
        seconds = rng.uniform(min_s, max_s)
        x = make_signal(int(seconds * sr), ch, sr, rng)
        fmt, sub = formats[ext]
        path = folder / f"f{i:04d}_{sr}hz_{ch}ch.{ext}"
        sf.write(path, x, sr, format=fmt, subtype=sub)
        paths.append(path)
    return paths


# -- model -------------------------------------------------------------------------------------------------
@torch.no_grad()
def build_model(folder: Path, seed: int):
    """A random-weight 24 kHz ``transformers.EncodecModel`` with codebooks filled from residuals of a test
    signal (as k-means initialisation would, so codes are diverse), saved to ``folder`` (safetensors)."""
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(seed)
    model = EncodecModel(EncodecConfig()).eval()  # the defaults are facebook/encodec_24khz
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.from_numpy(make_signal(MODEL_RATE * 4, 1, MODEL_RATE, np.random.default_rng(seed)).T)[None]
    residual = model.encoder(x / x.pow(2).mean().sqrt())[0].t()  # [frames, D]
    for layer in model.quantizer.layers:
        embed = layer.codebook.embed
        pick = torch.randint(0, residual.shape[0], (embed.shape[0],), generator=gen)
        embed.copy_(residual[pick] + torch.randn(embed.shape, generator=gen) * residual.std() * 0.1)
        residual = residual - embed[torch.cdist(residual, embed).argmin(dim=1)]
    model.save_pretrained(folder)
    return model


# -- methods -----------------------------------------------------------------------------------------------
@dataclass
class Run:
    method: str
    files: int
    audio_seconds: float
    wall_seconds: float
    pipeline_seconds: float | None = None  # the pipeline's own time, start-up and model loading excluded
    note: str = ""


@torch.inference_mode()
def naive_encode(model, path: Path, device: str) -> tuple[np.ndarray, float]:
    """One file: codes ``[n_q, frames]`` and its duration in seconds."""
    x, sr = sf.read(path, dtype="float32", always_2d=True)  # [T, C]
    mono = x.mean(axis=1)  # mix first, then resample: the order rvqkit uses
    y = soxr.resample(mono, sr, MODEL_RATE, quality="HQ").astype(np.float32)
    out = model.encode(torch.tensor(y)[None, None].to(device), bandwidth=BANDWIDTH)
    c = out.audio_codes[0, 0]
    if out.last_frame_pad_length:
        c = c[..., : -out.last_frame_pad_length]
    return c.cpu().numpy(), x.shape[0] / sr


def naive_loop(model, paths: list[Path], device: str) -> tuple[Run, dict[str, np.ndarray]]:
    """(a): one file at a time, as a user without rvqkit would write it. Returns codes ``[n_q, frames]``."""
    codes: dict[str, np.ndarray] = {}
    audio_s = 0.0
    t0 = time.perf_counter()
    for p in paths:
        codes[str(p.resolve())], seconds = naive_encode(model, p, device)
        audio_s += seconds
    wall = time.perf_counter() - t0
    return Run("(a) naive loop, `transformers.EncodecModel`", len(paths), audio_s, wall, wall), codes


def rvqkit_cli(corpus: Path, out: Path, model_dir: Path, device: str, extra: list[str], label: str) -> Run:
    """(b) / (c): ``rvqkit corpus encode`` as a subprocess; wall time of the whole command."""
    cmd = [
        sys.executable,
        "-m",
        "rvqkit",
        "corpus",
        "encode",
        str(corpus),
        str(out),
        "--model",
        str(model_dir),
    ]
    cmd += ["--bandwidth", f"{BANDWIDTH:g}", "--quiet", *extra]
    if device != "cpu":
        cmd += ["--device", device]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    import json

    counts = json.loads((out / "manifest.json").read_text())["counts"]
    m = re.search(r"RTF ([0-9.eE+-]+)", proc.stderr)
    pipeline = float(m.group(1)) * counts["audio_seconds"] if m else None
    note = "" if counts["errors"] == 0 else f"{counts['errors']} errors: {counts['errors_by_reason']}"
    return Run(label, counts["rows"], counts["audio_seconds"], wall, pipeline, note)


def read_codes(out: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(out / "data", columns=["path", "codes"]).to_pydict()
    return {p: np.asarray(c, dtype=np.int64) for p, c in zip(table["path"], table["codes"], strict=True)}


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> tuple[int, int, int, int, int]:
    """(files compared, files with a difference, mismatching frames, frames, mismatching codes).
    A frame mismatches when any of its codebooks differs; a shape difference counts all frames of a file."""
    files = bad_files = bad_frames = frames = bad_codes = 0
    for path, a in ref.items():
        if path not in got:
            continue
        b = got[path]
        files += 1
        frames += a.shape[-1]
        if a.shape != b.shape:
            bad_files += 1
            bad_frames += a.shape[-1]
            bad_codes += a.size
            continue
        diff = a != b
        if diff.any():
            bad_files += 1
            bad_frames += int(diff.any(axis=0).sum())
            bad_codes += int(diff.sum())
    return files, bad_files, bad_frames, frames, bad_codes


def model_only(model_dir: Path, paths: list[Path], device: str) -> Run:
    """(m), not one of the issue's methods: the floor under (b) on this machine. Every file is read and
    resampled first (untimed) as the corpus workers do; then only rvqkit's model is timed, with the
    corpus defaults (``encode_loaded``: length-sorted batches, LSTM batched across items), with
    ``rvqkit.tune_allocator()`` as the CLI applies it. No decoding, no Parquet, no start-up."""
    import rvqkit
    from rvqkit import Codec
    from rvqkit.corpus.encoding import auto_batch_samples, encode_loaded
    from rvqkit.corpus.loading import LoadSpec, load_item

    rvqkit.tune_allocator()  # process-wide: run (m) after the other methods
    codec = Codec.from_pretrained(model_dir, device=device)
    spec = LoadSpec(codec.sample_rate, codec.channels)
    t0 = time.perf_counter()
    loaded = [load_item(i, str(p), spec) for i, p in enumerate(paths)]
    load_s = time.perf_counter() - t0
    audio_s = sum(it.num_samples / it.sample_rate for it in loaded)
    t0 = time.perf_counter()
    results = encode_loaded(codec, loaded, BANDWIDTH, auto_batch_samples(codec))
    wall = time.perf_counter() - t0
    assert all(r.ok for r in results)
    note = (
        f"reading and resampling the {len(paths)} files beforehand took {load_s:.1f} s in one process "
        "(untimed here; (b) does it in a niced worker process on the same cores)"
    )
    label = "(m) rvqkit's model alone on the decoded audio (not an issue method)"
    return Run(label, len(paths), audio_s, wall, note=note)


def _rvqkit_codes(model_dir: Path, paths: list[str], device: str, threads: int, lstm_batch: int) -> dict:
    """Files encoded one at a time by ``rvqkit.Codec.encode`` (audio prepared as in (a)), with ``threads``
    torch threads and the given ``lstm_batch``."""
    from rvqkit import Codec

    codec = Codec.from_pretrained(model_dir, device=device)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    out = {}
    try:
        for p in paths:
            x, sr = sf.read(p, dtype="float32", always_2d=True)
            y = soxr.resample(x.mean(axis=1), sr, MODEL_RATE, quality="HQ").astype(np.float32)
            out[p] = codec.encode(y, MODEL_RATE, bandwidth=BANDWIDTH, lstm_batch=lstm_batch).codes[0].numpy()
    finally:
        torch.set_num_threads(saved)
    return out


def code_checks(model_dir: Path, codes: dict[str, dict[str, np.ndarray]], device: str) -> list[str]:
    """Report lines comparing (b) and (c) with (a), every file. The files that differ are encoded again one
    at a time by ``rvqkit.Codec.encode`` to tell where the difference comes from: (b) and (c) batch the
    encoder's LSTM across items (``--lstm-batch 8``), which rounds about 1e-7 differently from a batch of
    one; (c)'s Ray actors also run one torch thread each."""
    lines = []
    threads = {"b": torch.get_num_threads(), "c": 1}
    for key in ("b", "c"):
        if key not in codes:
            continue
        f, bf, bfr, fr, bc = compare(codes["a"], codes[key])
        line = (
            f"- codes ({key}) vs (a): {f} files compared, {bf} with a difference; "
            f"{bfr} of {fr} frames mismatch ({bc} of {fr * 8} codes)"
        )
        differing = [
            p for p in codes["a"] if p in codes[key] and not np.array_equal(codes["a"][p], codes[key][p])
        ]
        if differing:
            t = threads[key]
            alone = _rvqkit_codes(model_dir, differing, device, t, lstm_batch=8)
            _, bf8, bfr8, _, _ = compare(alone, codes[key])
            line += (
                f". Those {len(differing)} files encoded one at a time by `Codec.encode(..., lstm_batch=8)` "
                f"with {t} torch thread(s): {bf8} differ from ({key}) ({bfr8} frames)"
            )
            if key == "b":
                exact = _rvqkit_codes(model_dir, differing, device, t, lstm_batch=1)
                _, bf1, bfr1, _, _ = compare(codes["a"], exact)
                line += f"; with `lstm_batch=1` (a batch of one, as transformers): {bf1} differ from (a) ({bfr1} frames)"
        lines.append(line)
    return lines


# -- report ------------------------------------------------------------------------------------------------
def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def machine(device: str) -> list[str]:
    import transformers

    import rvqkit

    gpu = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else "none (torch.cuda.is_available() is False)"
    )
    return [
        f"- CPU: {cpu_model()}, `os.cpu_count()` = {os.cpu_count()}; GPU: {gpu}; device used: `{device}`",
        f"- torch {torch.__version__}, default threads `torch.get_num_threads()` = {torch.get_num_threads()}; "
        f"transformers {transformers.__version__}; rvqkit {rvqkit.__version__}; Python {platform.python_version()}",
        f"- libsndfile {sf.__libsndfile_version__}; formats written: {', '.join(sorted(writable_formats()))}",
    ]


def table(runs: list[Run]) -> list[str]:
    base = runs[0].audio_seconds / runs[0].wall_seconds if runs and runs[0].method.startswith("(a)") else None
    lines = [
        "| method | files | audio hours | wall s | audio s per wall s | ratio to (a) "
        "| pipeline s (no start-up) | audio s per pipeline s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        speed = r.audio_seconds / r.wall_seconds
        ratio = f"{speed / base:.2f}×" if base else "–"
        ps = f"{r.pipeline_seconds:.1f}" if r.pipeline_seconds else "–"
        pspeed = f"{r.audio_seconds / r.pipeline_seconds:.2f}" if r.pipeline_seconds else "–"
        lines.append(
            f"| {r.method} | {r.files} | {r.audio_seconds / 3600:.4f} | {r.wall_seconds:.1f} | {speed:.2f} "
            f"| {ratio} | {ps} | {pspeed} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=300, help="files in the generated corpus (default 300)")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="shortest file, seconds (default 1)")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="longest file, seconds (default 30)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--corpus", type=Path, help="generate the corpus here (an empty or new folder; kept)")
    ap.add_argument(
        "--methods",
        default="abc",
        help="which of (a) naive loop, (b) rvqkit local, (c) rvqkit Ray (default abc); "
        "'1' adds the naive loop with one torch thread, 'm' rvqkit's model alone on pre-decoded audio",
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--out", type=Path, help="report file (default benchmarks/results/corpus_<UTC date>.md)")
    args = ap.parse_args(argv)
    if args.files < 1 or not 0 < args.min_seconds <= args.max_seconds:
        ap.error("need --files >= 1 and 0 < --min-seconds <= --max-seconds")

    with tempfile.TemporaryDirectory(prefix="corpus_bench_") as tmp:
        work = Path(tmp)
        corpus = args.corpus or work / "corpus"
        t0 = time.perf_counter()
        paths = generate_corpus(corpus, args.files, args.min_seconds, args.max_seconds, args.seed)
        gen_s = time.perf_counter() - t0
        model_dir = work / "model"
        model = build_model(model_dir, args.seed).to(args.device)
        load_before = _load()
        runs: list[Run] = []
        codes: dict[str, dict[str, np.ndarray]] = {}
        if "a" in args.methods:
            run, codes["a"] = naive_loop(model, paths, args.device)
            runs.append(run)
            print(f"(a) done: {run.wall_seconds:.1f} s, load {_load()}", file=sys.stderr)
        if "1" in args.methods:  # not one of the methods: how much is thread oversubscription
            saved = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                run, _ = naive_loop(model, paths, args.device)
            finally:
                torch.set_num_threads(saved)
            run.method = "(a1) the same loop, `torch.set_num_threads(1)`"
            runs.append(run)
            print(f"(a1) done: {run.wall_seconds:.1f} s, load {_load()}", file=sys.stderr)
        for key, extra, label in (
            ("b", [], "(b) `rvqkit corpus encode` (local engine, defaults)"),
            ("c", ["--engine", "ray"], "(c) `rvqkit corpus encode --engine ray` (local Ray)"),
        ):
            if key in args.methods:
                out = work / f"out_{key}"
                runs.append(rvqkit_cli(corpus, out, model_dir, args.device, extra, label))
                codes[key] = read_codes(out)
                print(f"{key} done: {runs[-1].wall_seconds:.1f} s, load {_load()}", file=sys.stderr)
        if "m" in args.methods:  # after the others: it sets the allocator for this process
            runs.append(model_only(model_dir, paths, args.device))
            print(f"(m) done: {runs[-1].wall_seconds:.1f} s, load {_load()}", file=sys.stderr)
        load_after = _load()
        checks = code_checks(model_dir, codes, args.device) if "a" in codes else []

    exts = sorted({p.suffix[1:] for p in paths})
    date = datetime.now(timezone.utc)
    lines = [
        f"# Corpus encoding benchmark, {date:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        f"Corpus: {len(paths)} files ({', '.join(exts)}; {', '.join(str(r) for r in RATES)} Hz; mono and stereo), "
        f"{args.min_seconds:g}–{args.max_seconds:g} s uniform, seed {args.seed}; generated in {gen_s:.0f} s. "
        f"Model: random-weight 24 kHz `transformers.EncodecModel(EncodecConfig())` saved as a Hugging Face "
        f"folder, used by all methods; {BANDWIDTH:g} kbps (8 codebooks).",
        "",
        *machine(args.device),
        f"- load average (1, 5, 15 min) `os.getloadavg()`: before the runs {load_before}; after {load_after}",
        "",
        *table(runs),
        "",
        "Wall s: (a) the loop alone (model already loaded); (b), (c) the whole command, Python start-up, model "
        "loading and Ray start-up included. Pipeline s: (b), (c) the job's own time from its summary line "
        "(RTF × audio seconds).",
        "",
    ]
    lines += checks + ([""] if checks else [])
    notes = [f"- {r.method}: {r.note}" for r in runs if r.note]
    lines += notes + ([""] if notes else [])
    report = "\n".join(lines)
    print(report)
    out = args.out or REPO / "benchmarks" / "results" / f"corpus_{date:%Y-%m-%d}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"saved {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
