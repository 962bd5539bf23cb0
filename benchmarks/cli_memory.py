"""Peak memory (RSS) of each CLI command on N hours of generated audio: the CLI's memory must not grow
with the input's length (target: 24 h through any command under 1.5 GB).

    python benchmarks/cli_memory.py --hours 24            # the target (about a day of CPU time)
    python benchmarks/cli_memory.py --hours 0.1,0.3       # two sizes: prints the per-hour slope

The model is ``random-24khz`` by default (rvqkit's random-weight ``encodec_24khz``: the real
architecture and sizes; ``--model`` takes real weights). Commands run on ``--device`` (default cpu). The input is a FLAC at 24 kHz mono, silence or noise (``--signal``), written
block by block. Each command runs in a fresh process; its peak RSS is read with ``getrusage`` from a
wrapper process whose only child it is. ``inspect`` looks at its first ``--seconds`` (60 by default), so
its memory is bounded by that, not by the file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import cpu_model  # noqa: E402

SR = 24000
COMMANDS = ("compress", "decompress", "encode", "decode", "roundtrip", "tokens", "inspect")
WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run([sys.executable, '-m', 'rvqkit', *sys.argv[1:]], capture_output=True, text=True)\n"
    "if r.returncode:\n"
    "    sys.exit(r.stderr)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t)\n"
)


def write_input(path: Path, hours: float, signal: str) -> None:
    """``hours`` of 24 kHz mono FLAC, written a minute at a time (bounded memory)."""
    rng = np.random.default_rng(0)
    left = int(hours * 3600 * SR)
    with sf.SoundFile(path, "w", SR, 1, format="FLAC", subtype="PCM_16") as f:
        while left:
            n = min(left, 60 * SR)
            block = np.zeros((n, 1), np.float32) if signal == "silence" else rng.normal(0, 0.1, (n, 1))
            f.write(block.astype(np.float32))
            left -= n


def peak(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``rvqkit ARGS`` in a fresh process."""
    res = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"rvqkit {' '.join(args)} failed: {res.stderr}")
    rss, seconds = res.stdout.split()
    return float(rss), float(seconds)


def run_size(
    folder: Path, model: str, device: str, hours: float, signal: str, bandwidth: str, commands
) -> dict:
    audio = folder / f"in-{hours:g}h.flac"
    write_input(audio, hours, signal)
    m = ["-m", model, "--device", device]
    jobs = {
        "compress": ["compress", audio, folder / "a.ecdc", *m, "-b", bandwidth, "--overwrite"],
        "decompress": ["decompress", folder / "a.ecdc", folder / "a.wav", *m, "--overwrite"],
        "encode": ["encode", audio, folder / "a.npz", *m, "-b", bandwidth, "--overwrite"],
        "decode": ["decode", folder / "a.npz", folder / "d.wav", *m, "--overwrite"],
        "roundtrip": ["roundtrip", audio, folder / "r.wav", *m, "-b", bandwidth, "--overwrite"],
        "tokens": ["tokens", audio, *m, "-b", bandwidth, "--out", folder / "t.npz", "--overwrite"],
        "inspect": ["inspect", audio, *m, "-b", bandwidth, "--json"],
    }
    out = {}
    for name in commands:
        rss, seconds = peak([str(a) for a in jobs[name]])
        out[name] = (rss, seconds)
        print(f"  {hours:g} h {name:>10}: peak RSS {rss:7.0f} MB  ({seconds:6.1f} s)", flush=True)
    audio.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", default="24", help="comma-separated input lengths in hours (e.g. 0.1,0.3)")
    ap.add_argument("--signal", choices=("silence", "noise"), default="silence")
    ap.add_argument("--bandwidth", default="6", help="kbps")
    ap.add_argument("--model", default="random-24khz", help="a 24 kHz model (default: random weights)")
    ap.add_argument("--device", default="cpu", help="torch device of every command")
    ap.add_argument("--commands", default=",".join(COMMANDS), help=f"comma-separated: {', '.join(COMMANDS)}")
    args = ap.parse_args()
    hours = [float(h) for h in args.hours.split(",")]
    commands = [c for c in args.commands.split(",") if c]
    if (
        "decompress" in commands
        and "compress" not in commands
        or "decode" in commands
        and "encode" not in commands
    ):
        raise SystemExit("decompress needs compress (and decode needs encode) in --commands")
    print(
        f"CPU: {cpu_model()}; {args.model} on {args.device}; {args.signal}, 24 kHz mono FLAC, {args.bandwidth} kbps"
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {
            h: run_size(folder, args.model, args.device, h, args.signal, args.bandwidth, commands)
            for h in hours
        }
    print(
        f"\n{'command':>10} "
        + " ".join(f"{h:>9g} h" for h in hours)
        + ("   MB/hour" if len(hours) > 1 else "")
    )
    for name in commands:
        row = [results[h][name][0] for h in hours]
        slope = f"   {(row[-1] - row[0]) / (hours[-1] - hours[0]):8.1f}" if len(hours) > 1 else ""
        print(f"{name:>10} " + " ".join(f"{r:8.0f}MB" for r in row) + slope)
    print(f"({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
