"""Side-by-side speed of rvqkit, Hugging Face ``transformers.EncodecModel`` and Meta's ``encodec``.

One process times all three on the same machine with identical random weights (see
:mod:`bench_models`): the 24 kHz and 48 kHz models; encode and decode; 10 s and 60 s inputs; 6 and 24 kbps;
a batch of 16 × 10 s clips. It measures the machine's convolution peak (``F.conv1d``, 512 channels,
kernel 7) in the same run and prints each case's effective GFLOP/s (FLOP counted layer by layer, see
:mod:`flops`) as a share of it. Peak memory for a 10-minute file is measured in a fresh child process per
implementation (Linux: ``/proc/self/clear_refs`` resets the high-water mark, ``VmHWM`` reads it).

    python benchmarks/bench_codec.py                      # full run, writes benchmarks/results/
    python benchmarks/bench_codec.py --quick              # 2 s / 4 s inputs, batch of 2, 20 s memory file

Times are medians of wall-clock seconds per call, including each library's own input handling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import MODELS, REPO, build_set, cpu_model, make_signal  # noqa: E402
from flops import codec_cost, conv_peak  # noqa: E402

from rvqkit import tune_allocator as rvqkit_tune_allocator  # noqa: E402

IMPLS = ("rvqkit", "transformers", "encodec")
ALLOCATOR_TUNED = False  # set in main()
ISSUE_GFLOP = {"24": 5.96, "48": 12.6}  # issue 11's encode + decode figures, GFLOP per audio-second
TARGET_SHARE = 0.75


# -- machine ---------------------------------------------------------------------------------------------
def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "absent"


def machine() -> dict:
    """What the numbers were measured on."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "src"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit, dirty = "unknown", ""
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onednn": torch.backends.mkldnn.is_available(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "transformers": _version("transformers"),
        "encodec": _version("encodec"),
        "rvqkit_commit": commit + (" (+ uncommitted changes in src/)" if dirty else ""),
        "load_average_start": os.getloadavg(),
        "malloc_tuned_for_all_three": ALLOCATOR_TUNED,
    }


# -- timing ----------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, repeats: int, device: str) -> tuple[float, list[float], object]:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, all times, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


@dataclass
class Row:
    """One timed case: medians in seconds per implementation."""

    model: str
    case: str
    direction: str  # "encode", "decode"
    bandwidth: float
    seconds_audio: float  # audio-seconds processed per call (batch included)
    device: str
    median_s: dict[str, float] = field(default_factory=dict)
    times_s: dict[str, list[float]] = field(default_factory=dict)


def run_cases(
    mset, cases: list[tuple[str, float, int, float]], repeats: dict[str, int], device: str, rows: list[Row]
) -> None:
    """Time every implementation on each (case name, seconds, batch, kbps); check codes agree."""
    sr, ch = mset.sr, mset.channels
    for name, seconds, batch, bw in cases:
        n = int(seconds * sr)
        x = np.stack([make_signal(n, ch, sr, seed=10 + i) for i in range(batch)])
        enc_row = Row(mset.which, name, "encode", bw, seconds * batch, device)
        dec_row = Row(mset.which, name, "decode", bw, seconds * batch, device)
        codes = {}
        for impl in mset.impls(bw):
            r = repeats[name]
            enc_row.median_s[impl.name], enc_row.times_s[impl.name], encoded = timed(
                lambda impl=impl, x=x: impl.encode(x), r, device
            )
            dec_row.median_s[impl.name], dec_row.times_s[impl.name], _ = timed(
                lambda impl=impl, encoded=encoded: impl.decode(encoded), r, device
            )
            codes[impl.name] = impl.codes_of(encoded).cpu()
            print(
                f"  {mset.which} kHz {name:>9} {bw:>4g} kbps {impl.name:>12}: encode "
                f"{enc_row.median_s[impl.name]:7.3f} s  decode {dec_row.median_s[impl.name]:7.3f} s",
                flush=True,
            )
        for other in IMPLS[1:]:
            differ = int((codes[other] != codes["rvqkit"]).sum())
            if differ:
                print(f"  WARNING: {differ} codes differ between rvqkit and {other} ({name}, {bw:g} kbps)")
        rows += [enc_row, dec_row]


# -- peak memory (child process) -----------------------------------------------------------------------------
def _status_kib(field_name: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M).group(1))


def memory_child(impl_name: str, which: str, checkpoint: str, seconds: float, bandwidth: float) -> None:
    """Encode + decode a ``seconds``-long file with one implementation; print peak RSS above the state
    before the call (input signal and model already in memory) as JSON."""
    from bench_models import build_hf_from_meta, hf_impl, import_meta_encodec, meta_impl, rvqkit_impl

    sr, ch, _ = MODELS[which]
    if impl_name == "rvqkit":
        import rvqkit

        impl = rvqkit_impl(rvqkit.Codec.from_pretrained(checkpoint), sr, bandwidth)
    else:
        encodec = import_meta_encodec()
        factory = (
            encodec.EncodecModel.encodec_model_24khz
            if which == "24"
            else encodec.EncodecModel.encodec_model_48khz
        )
        meta = factory(pretrained=False).eval()
        meta.load_state_dict(torch.load(checkpoint, weights_only=True))
        impl = (
            meta_impl(meta, bandwidth)
            if impl_name == "encodec"
            else hf_impl(build_hf_from_meta(which, meta), bandwidth)
        )
    x = make_signal(int(seconds * sr), ch, sr, seed=5)[None]
    impl.decode(impl.encode(x[..., : sr // 2]))  # warm-up on 0.5 s (allocator, oneDNN primitives)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    t0 = time.perf_counter()
    audio = impl.decode(impl.encode(x))
    wall = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    del audio
    print(
        json.dumps(
            {
                "before_mib": before / 1024,
                "peak_mib": peak / 1024,
                "extra_mib": (peak - before) / 1024,
                "wall_s": wall,
            }
        )
    )


def measure_memory(which: str, checkpoint: Path, seconds: float, bandwidth: float) -> dict[str, dict]:
    out = {}
    for impl in IMPLS:
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            impl,
            which,
            str(checkpoint),
            str(seconds),
            str(bandwidth),
        ] + ([] if ALLOCATOR_TUNED else ["--no-tune-allocator"])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            out[impl] = {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
        else:
            out[impl] = json.loads(lines[-1])
        print(f"  {which} kHz {seconds:g} s memory {impl:>12}: {out[impl]}", flush=True)
    return out


# -- report --------------------------------------------------------------------------------------------------
def _share(flop: float, seconds: float, peak: float) -> tuple[float, float]:
    gflops = flop / seconds / 1e9
    return gflops, gflops / peak


def report(result: dict) -> str:
    """The Markdown report: machine, peak, FLOP counts, the table, the target cases and memory."""
    m, peak = result["machine"], result["conv_peak_gflops"]
    lines = [
        "# rvqkit vs transformers vs encodec: benchmark",
        "",
        f"Command: `{result['command']}`",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in m.items()]
    lines += [
        "",
        f"Convolution peak (F.conv1d, 512→512 channels, kernel 7, batch 1; median GFLOP/s, best length): "
        f"**{peak:.1f} GFLOP/s** (start of run {result['conv_peak_start']['gflops']:.1f}, "
        f"end {result['conv_peak_end']['gflops']:.1f}).",
        "",
        "## Arithmetic (counted layer by layer on rvqkit's forward pass, GFLOP per audio-second)",
        "",
        "| model | encoder conv | encoder LSTM | decoder conv | decoder LSTM | encode + decode | issue's figure | quantizer (encode, 6 kbps, not counted) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for which, c in result["flops"].items():
        lines.append(
            f"| {which} kHz | {c['enc_conv'] / 1e9:.3f} | {c['enc_lstm'] / 1e9:.3f} | {c['dec_conv'] / 1e9:.3f} | "
            f"{c['dec_lstm'] / 1e9:.3f} | {c['total'] / 1e9:.2f} | {ISSUE_GFLOP[which]} | {c['quant'] / 1e9:.3f} |"
        )
    lines += [
        "",
        "## Times (median seconds per call; ratio = other / rvqkit, > 1 means rvqkit is faster)",
        "",
        "| model | device | input | kbps | direction | rvqkit s | transformers s | encodec s | transformers / rvqkit | encodec / rvqkit | rvqkit GFLOP/s | rvqkit % of peak | transformers % | encodec % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        c = result["flops"][r["model"]]
        flop = c[r["direction"]] * r["seconds_audio"]
        med = r["median_s"]
        shares = {k: _share(flop, v, peak) for k, v in med.items()}
        lines.append(
            f"| {r['model']} kHz | {r['device']} | {r['case']} | {r['bandwidth']:g} | {r['direction']} | "
            f"{med['rvqkit']:.3f} | {med['transformers']:.3f} | {med['encodec']:.3f} | "
            f"{med['transformers'] / med['rvqkit']:.2f}× | {med['encodec'] / med['rvqkit']:.2f}× | "
            f"{shares['rvqkit'][0]:.1f} | {100 * shares['rvqkit'][1]:.0f} % | "
            f"{100 * shares['transformers'][1]:.0f} % | {100 * shares['encodec'][1]:.0f} % |"
        )
    lines += [
        "",
        f"## Encode + decode against the target ({100 * TARGET_SHARE:.0f} % of the conv peak, 6 kbps)",
        "",
        "| model | device | input | rvqkit s | GFLOP/s | % of peak | transformers % | encodec % | transformers / rvqkit | encodec / rvqkit | target met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summarize(result):
        lines.append(
            f"| {s['model']} kHz | {s['device']} | {s['case']} | {s['rvqkit_s']:.3f} | {s['gflops']:.1f} | "
            f"{100 * s['share']:.0f} % | {100 * s['share_transformers']:.0f} % | {100 * s['share_encodec']:.0f} % | "
            f"{s['ratio_transformers']:.2f}× | {s['ratio_encodec']:.2f}× | {'yes' if s['share'] >= TARGET_SHARE else 'no'} |"
        )
    if result.get("memory"):
        lines += [
            "",
            f"## Peak memory, encode + decode of one {result['memory_seconds']:g} s file (6 kbps), fresh process each",
            "",
            "RSS high-water mark above the process's RSS just before the call (model and input already loaded), MiB.",
            "",
            "| model | rvqkit MiB | transformers MiB | encodec MiB | rvqkit wall s | transformers wall s | encodec wall s |",
            "|---|---|---|---|---|---|---|",
        ]
        for which, mem in result["memory"].items():

            def cell(impl, key, fmt, mem=mem):
                v = mem[impl].get(key)
                return "error: " + mem[impl]["error"] if v is None else format(v, fmt)

            lines.append(
                f"| {which} kHz | "
                + " | ".join(cell(i, "extra_mib", ".0f") for i in IMPLS)
                + " | "
                + " | ".join(cell(i, "wall_s", ".1f") for i in IMPLS)
                + " |"
            )
    for which, table in result.get("profiles", {}).items():
        lines += [
            "",
            f"## Where rvqkit's time goes: {which} kHz, encode + decode of one {result['short_seconds']:g} s input "
            "(torch.profiler, self CPU time by op; the profiler adds some overhead)",
            "",
            "```",
            table.rstrip(),
            "```",
        ]
    lines += ["", f"Load average at the end of the run: {result['load_average_end']}", ""]
    return "\n".join(lines)


def summarize(result: dict) -> list[dict]:
    """Encode + decode at 6 kbps for every single-item case and the batch: the issue's target view."""
    peak = result["conv_peak_gflops"]
    pairs: dict[tuple, dict] = {}
    for r in result["rows"]:
        if r["bandwidth"] != 6.0:
            continue
        key = (r["model"], r["device"], r["case"])
        p = pairs.setdefault(key, {"seconds_audio": r["seconds_audio"], "t": dict.fromkeys(IMPLS, 0.0)})
        for impl in IMPLS:
            p["t"][impl] += r["median_s"][impl]
    out = []
    for (model, device, case), p in pairs.items():
        flop = result["flops"][model]["total"] * p["seconds_audio"]
        t = p["t"]
        out.append(
            {
                "model": model,
                "device": device,
                "case": case,
                "rvqkit_s": t["rvqkit"],
                "gflops": flop / t["rvqkit"] / 1e9,
                "share": flop / t["rvqkit"] / 1e9 / peak,
                "share_transformers": flop / t["transformers"] / 1e9 / peak,
                "share_encodec": flop / t["encodec"] / 1e9 / peak,
                "ratio_transformers": t["transformers"] / t["rvqkit"],
                "ratio_encodec": t["encodec"] / t["rvqkit"],
            }
        )
    return out


def profile_rvqkit(mset, seconds: float, bandwidth: float = 6.0) -> str:
    """torch.profiler table by op (self CPU time) of rvqkit encode + decode of one ``seconds``-long input."""
    from torch.profiler import ProfilerActivity, profile

    x = make_signal(int(seconds * mset.sr), mset.channels, mset.sr, seed=10)[None]
    codec = mset.rvqkit
    codec.decode(codec.encode(x, mset.sr, bandwidth=bandwidth))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        codec.decode(codec.encode(x, mset.sr, bandwidth=bandwidth))
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)


def measure_peak(lengths: tuple[int, ...], repeats: int) -> dict:
    runs = {n: conv_peak(length=n, repeats=repeats)["gflops_median"] for n in lengths}
    best = max(runs, key=runs.get)
    return {"gflops": runs[best], "length": best, "by_length": runs}


def render_saved(path: Path) -> None:
    """Write ``<path>.md`` from a result file; a partial one (run cut short) is marked as such."""
    result = json.loads(path.read_text())
    partial = "conv_peak_end" not in result
    if partial:
        result["conv_peak_end"] = result["conv_peak_start"]
        result["conv_peak_gflops"] = result["conv_peak_start"]["gflops"]
        result["load_average_end"] = "not recorded (run cut short)"
        result.setdefault("short_seconds", 10.0)
        result["summary"] = summarize(result)
    text = report(result)
    if partial:
        text = text.replace(
            "# rvqkit vs",
            "# (partial run: cases after the last completed model are missing)\n\n# rvqkit vs",
            1,
        )
    path.with_suffix(".md").write_text(text + "\n")
    if partial:
        path.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    print(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short inputs: a smoke test of the script")
    ap.add_argument("--models", default="24,48", help="comma-separated: 24, 48")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-memory", action="store_true", help="skip the 10-minute peak-memory runs")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory runs")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="results folder")
    ap.add_argument("--tag", default=None, help="name of the result files (default: date and time)")
    ap.add_argument(
        "--report-from", type=Path, default=None, help="render the report of a saved (possibly partial) .json"
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per 10 s case (median reported)")
    ap.add_argument("--repeats-long", type=int, default=2, help="timed calls per 60 s and batch case")
    ap.add_argument(
        "--no-tune-allocator", action="store_true", help="leave glibc malloc's defaults (see rvqkit.runtime)"
    )
    ap.add_argument(
        "--memory-child",
        nargs=5,
        metavar=("IMPL", "MODEL", "CKPT", "SECONDS", "KBPS"),
        help=argparse.SUPPRESS,
    )
    args = ap.parse_args(argv)
    global ALLOCATOR_TUNED
    # rvqkit's CLI keeps freed memory in the process (rvqkit.tune_allocator); it is process-wide, so in
    # this one-process comparison it applies to all three implementations alike.
    ALLOCATOR_TUNED = not args.no_tune_allocator and rvqkit_tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report_from:
        render_saved(args.report_from)
        return
    if args.memory_child:
        impl, which, ckpt, seconds, bw = args.memory_child
        memory_child(impl, which, ckpt, float(seconds), float(bw))
        return

    short, long_, batch, mem_seconds = (2.0, 4.0, 2, 20.0) if args.quick else (10.0, 60.0, 16, 600.0)
    tag = args.tag or time.strftime("%Y%m%d-%H%M", time.gmtime())
    names = {"short": f"{short:g} s", "long": f"{long_:g} s", "batch": f"{batch} × {short:g} s"}
    repeats = {
        names["short"]: args.repeats,
        names["long"]: args.repeats_long,
        names["batch"]: args.repeats_long,
    }
    cases = [(names["short"], short, 1, bw) for bw in (6.0, 24.0)]
    cases += [(names["long"], long_, 1, bw) for bw in (6.0, 24.0)]
    cases += [(names["batch"], short, batch, 6.0)]

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    result: dict = {
        "command": "python "
        + " ".join([os.path.relpath(__file__, REPO)] + sys.argv[1:] if argv is None else argv),
        "machine": machine(),
    }
    print(json.dumps(result["machine"], indent=1), flush=True)
    peak_lengths, peak_reps = (1024, 4096, 16384), 10
    result["conv_peak_start"] = measure_peak(peak_lengths, peak_reps)
    print(f"conv peak: {result['conv_peak_start']}", flush=True)

    which_list = args.models.split(",")
    rows: list[Row] = []
    result["flops"] = {}
    result["memory"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for which in which_list:
            mset = build_set(which, Path(tmp))
            result["flops"][which] = codec_cost(mset.rvqkit, 10.0, 6.0)
            print(
                f"{which} kHz GFLOP per audio-second: { {k: round(v / 1e9, 3) for k, v in result['flops'][which].items()} }",
                flush=True,
            )
            if not args.memory_only:
                for impl in mset.impls(6.0):  # warm-up: allocator, oneDNN primitive caches
                    impl.decode(impl.encode(make_signal(mset.sr, mset.channels, mset.sr)[None]))
                for device in devices:
                    if device != "cpu":
                        mset.rvqkit = type(mset.rvqkit)(mset.rvqkit.model, device, mset.rvqkit.weights_sha256)
                        mset.hf.to(device)
                        mset.meta.to(device)
                    run_cases(mset, cases, repeats, device, rows)
                    if device != "cpu":
                        mset.rvqkit = type(mset.rvqkit)(mset.rvqkit.model, "cpu", mset.rvqkit.weights_sha256)
                        mset.hf.to("cpu")
                        mset.meta.to("cpu")
                result.setdefault("profiles", {})[which] = profile_rvqkit(mset, short)
                print(result["profiles"][which], flush=True)
                args.out.mkdir(parents=True, exist_ok=True)  # partial results, in case the run is cut short
                partial = {**result, "rows": [asdict(r) for r in rows]}
                (args.out / f"{tag}.partial.json").write_text(json.dumps(partial, indent=1, default=str))
            if not args.no_memory:
                result["memory"][which] = measure_memory(which, mset.checkpoint, mem_seconds, 6.0)
            del mset
    result["rows"] = [asdict(r) for r in rows]
    result["memory_seconds"] = mem_seconds
    result["short_seconds"] = short
    result["conv_peak_end"] = measure_peak(peak_lengths, peak_reps)
    result["conv_peak_gflops"] = max(result["conv_peak_start"]["gflops"], result["conv_peak_end"]["gflops"])
    result["load_average_end"] = os.getloadavg()
    result["summary"] = summarize(result) if rows else []
    text = report(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.partial.json").unlink(missing_ok=True)
    (args.out / f"{tag}.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / f"{tag}.md").write_text(text + "\n")
    print(f"wrote {args.out / (tag + '.md')} and .json")


if __name__ == "__main__":
    main()
