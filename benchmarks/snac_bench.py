"""rvqkit's SNAC against the snac package (1.2.1), same process, same random weights (24 kHz config).

    python benchmarks/snac_bench.py             # speed: 10 s encode + decode, a batch of 16 mixed-length items
    python benchmarks/snac_bench.py --measure   # noise, padded-batch and chunking differences (minutes)
    python benchmarks/snac_bench.py --measure --weights snac_24khz/   # the same on a real checkpoint
    python benchmarks/snac_bench.py --memory 60  # peak memory: snac, rvqkit whole, rvqkit chunked

Speed: wall-clock seconds per call after a warm-up (snac's TorchScript Snake optimizes on its second
call), best of ``--repeats``. rvqkit decodes with the noise off (its default; the NoiseBlocks' 1x1
convolutions are skipped) and, for a like-for-like figure, with seeded noise. The batch: 16 items of
0.25-1.25 s (seeded lengths); rvqkit encodes and decodes each item alone at its own padded length
(exact per item); snac either pads them into one batch (its only batch API; the shorter items' last
codes change, see --measure) or loops over the items. Ratios are snac time / rvqkit time in this run.
The load average is printed: on a shared machine, compare only ratios from one run. The allocator is
tuned as the rvqkit CLI does (:func:`rvqkit.tune_allocator`, process-wide: it applies to both).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from rvqkit import tune_allocator
from rvqkit.snac import PRESETS, SnacModel, load_snac
from rvqkit.snac.chunked import chunk_multiple, decode_chunked, encode_chunked, encoder_context
from rvqkit.snac.loading import build_snac, chirp_signal, fold_weight_norm, random_snac, seed_codebooks


def build(seed: int = 0, weights: str | None = None):
    """(rvqkit model, snac model or None) with the same weights: random (24 kHz config), or a checkpoint
    folder (config.json + pytorch_model.bin) read by each library's own loader."""
    cfg = PRESETS["snac_24khz"]
    try:
        import snac
    except ImportError:
        print("snac is not installed (pip install -c constraints.txt snac==1.2.1): rvqkit alone")
        return (load_snac(weights)[0] if weights else random_snac(cfg, seed)), None
    if weights:
        return load_snac(weights)[0], snac.SNAC.from_pretrained(weights).eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = snac.SNAC(**cfg.to_snac_config()).eval()
        for name, p in ref.named_parameters():
            if name.endswith(("alpha", "original0")):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
        ours = build_snac(cfg, fold_weight_norm(ref.state_dict()))
        seed_codebooks(ours, chirp_signal(cfg.sampling_rate, 2.0, seed), seed)
        for q_ref, q in zip(ref.quantizer.quantizers, ours.quantizer.quantizers, strict=True):
            q_ref.codebook.weight.copy_(q.codebook.weight)
    return ours, ref


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def mixed_items(sr: int, n: int = 16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = (torch.rand(n, generator=g) + 0.25) * sr
    return [chirp_signal(sr, float(n_) / sr, seed + i)[0, 0] for i, n_ in enumerate(lengths.long())]


def padded_batch(items: list[torch.Tensor]) -> torch.Tensor:
    n = max(x.shape[-1] for x in items)
    return torch.stack([torch.nn.functional.pad(x, (0, n - x.shape[-1])) for x in items])[:, None]


# -- speed ------------------------------------------------------------------------------------------------
def speed(ours: SnacModel, ref, seconds: float, repeats: int) -> None:
    sr = ours.config.sampling_rate
    x = chirp_signal(sr, seconds, 1)
    warm = chirp_signal(sr, 1.0, 2)
    rows: list[tuple[str, float, float | None]] = []
    with torch.inference_mode():
        for _ in range(2):  # warm-up: oneDNN primitives, snac's TorchScript profiling runs
            ours.decode(ours.encode(warm))
            if ref is not None:
                ref.decode(ref.encode(warm))
        codes = ours.encode(x)
        t_enc = best(lambda: ours.encode(x), repeats)
        t_dec = best(lambda: ours.decode(codes), repeats)
        t_dec_noise = best(lambda: ours.decode(codes, noise="seeded", generator=0), repeats)
        r_enc = r_dec = None
        if ref is not None:
            r_enc = best(lambda: ref.encode(x), repeats)
            r_dec = best(lambda: ref.decode(codes), repeats)
        rows += [
            (f"encode {seconds:g} s", t_enc, r_enc),
            (f"decode {seconds:g} s (rvqkit noise off)", t_dec, r_dec),
            (f"decode {seconds:g} s (rvqkit seeded noise)", t_dec_noise, r_dec),
            (f"encode + decode {seconds:g} s", t_enc + t_dec, None if ref is None else r_enc + r_dec),
        ]
        items = mixed_items(sr)
        total = sum(i.shape[-1] for i in items) / sr
        lengths = [i.shape[-1] for i in items]

        def ours_batch():
            ours.decode_items(ours.encode_items(items), lengths)

        t_batch = best(ours_batch, repeats)
        r_pad = r_loop = None
        if ref is not None:
            xb = padded_batch(items)
            r_pad = best(lambda: ref.decode(ref.encode(xb)), repeats)

            def ref_loop():
                for i in items:
                    ref.decode(ref.encode(i.view(1, 1, -1)))

            r_loop = best(ref_loop, repeats)
        label = f"batch of 16, {total:.1f} s in all"
        rows += [
            (f"{label}: snac padded batch", t_batch, r_pad),
            (f"{label}: snac item by item", t_batch, r_loop),
        ]
    print(f"\n{'case':58} {'rvqkit s':>9} {'snac s':>9} {'snac/rvqkit':>11}")
    for name, ours_t, ref_t in rows:
        ratio = f"{ref_t / ours_t:10.2f}x" if ref_t else "-"
        ref_s = f"{ref_t:9.2f}" if ref_t else "-"
        print(f"{name:58} {ours_t:9.2f} {ref_s:>9} {ratio:>11}")


# -- differences ----------------------------------------------------------------------------------------
def snr_db(signal: torch.Tensor, error: torch.Tensor) -> float:
    return 10 * math.log10(float(signal.pow(2).sum()) / max(float(error.pow(2).sum()), 1e-30))


def measure(ours: SnacModel, ref, label: str) -> None:
    sr = ours.config.sampling_rate
    print(f"\n== noise: decode(noise='off') against snac's noisy decode ({label}, 3 s signals)")
    with torch.inference_mode():
        for name, x in (
            ("chirp", chirp_signal(sr, 3.0, 3)),
            ("noise", torch.randn(1, 1, 3 * sr, generator=torch.Generator().manual_seed(4)) * 0.3),
            ("sine", 0.5 * torch.sin(2 * torch.pi * 220 * torch.arange(3 * sr) / sr).view(1, 1, -1)),
        ):
            codes = ours.encode(x)
            off = ours.decode(codes)
            for seed in (0, 1, 2):
                torch.manual_seed(seed)
                noisy = ref.decode(codes) if ref is not None else ours.decode(codes, noise="seeded")
                other = ours.decode(codes, noise="seeded", generator=seed + 10)
                print(
                    f"  {name:6} seed {seed}: SNR of (snac noisy - rvqkit off) {snr_db(noisy, noisy - off):6.2f} dB;"
                    f" two noisy decodes differ by SNR {snr_db(noisy, noisy - other):6.2f} dB;"
                    f" max |diff| {float((noisy - off).abs().max()):.3f}, rms noisy {float(noisy.pow(2).mean().sqrt()):.3f}"
                )

    print("\n== padded batch (snac's way) against each item alone: codes that differ")
    items = mixed_items(sr)
    xb = padded_batch(items)
    with torch.inference_mode():
        batch_codes = ours.encode(xb)
        if ref is not None:
            ref_codes = ref.encode(xb)
            same = all(torch.equal(a, b) for a, b in zip(batch_codes, ref_codes, strict=True))
            print(f"  rvqkit's encode of the padded batch equals snac's: {same}")
        alone = ours.encode_items(items)
    diff = total = items_hit = 0
    last_frames = []
    for k, (item, codes) in enumerate(zip(items, alone, strict=True)):
        hit = 0
        for lvl, c in enumerate(codes):
            b = batch_codes[lvl][k, : c.shape[0]]
            d = (b != c).nonzero().flatten()
            hit += d.numel()
            total += c.numel()
            if d.numel() and lvl == len(codes) - 1:
                last_frames.append(c.shape[0] - int(d.min()))
        diff += hit
        items_hit += bool(hit)
        print(
            f"    item {k:2} ({item.shape[-1] / sr:4.2f} s, padded {ours.padded_length(item.shape[-1]) / sr:4.2f} s): {hit} differ"
        )
    print(
        f"  {diff} of {total} codes differ ({100 * diff / total:.1f} %), in {items_hit} of {len(items)} items;"
        f" at the finest level they start at most {max(last_frames, default=0)} frames before an item's end"
    )

    print("\n== chunked encode (10 s chunks) against the whole input, 60 s chirp + noise")
    x = torch.cat(
        [
            chirp_signal(sr, 30.0, 5),
            torch.randn(1, 1, 30 * sr, generator=torch.Generator().manual_seed(6)) * 0.2,
        ],
        -1,
    )
    m = chunk_multiple(ours.config)
    with torch.inference_mode():
        t = time.perf_counter()
        whole = ours.encode(x)
        t_whole = time.perf_counter() - t
        print(
            f"  whole: {t_whole:.1f} s; default overlap {encoder_context(ours)} samples -> {-(-encoder_context(ours) // m) * m}"
        )
        for overlap in (None, m, 0):
            t = time.perf_counter()
            chunked = encode_chunked(ours, x, chunk=10 * sr, overlap=overlap)
            dt = time.perf_counter() - t
            n = sum(int((a != b).sum()) for a, b in zip(chunked, whole, strict=True))
            tot = sum(c.numel() for c in whole)
            print(
                f"  overlap {'default' if overlap is None else overlap:>7}: {n} of {tot} codes differ; {dt:.1f} s"
            )
        t = time.perf_counter()
        audio = ours.decode(whole)
        t_dec = time.perf_counter() - t
        t = time.perf_counter()
        chunked_audio = decode_chunked(ours, whole, chunk_frames=math.ceil(10 * ours.config.frame_rate))
        dt = time.perf_counter() - t
        print(
            f"  chunked decode: max |diff| {float((audio - chunked_audio).abs().max()):.2e}, "
            f"SNR {snr_db(audio, audio - chunked_audio):.1f} dB; {dt:.1f} s (whole {t_dec:.1f} s)"
        )


# -- memory ---------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(which: str, seconds: float) -> None:
    """One implementation's peak memory above the loaded model for encode + decode of ``seconds`` of
    audio (Linux: clear_refs resets the high-water mark, VmHWM reads it). Prints one JSON line."""
    cfg = PRESETS["snac_24khz"]
    if which == "snac":
        import snac

        model = snac.SNAC(**cfg.to_snac_config()).eval()
    else:
        model = random_snac(cfg, 0)
    x = chirp_signal(cfg.sampling_rate, seconds, 1)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    t = time.perf_counter()
    with torch.inference_mode():
        if which == "rvqkit-chunked":
            audio = decode_chunked(model, encode_chunked(model, x))
        else:
            audio = model.decode(model.encode(x))
    wall = time.perf_counter() - t
    peak = _status_kib("VmHWM")
    del audio
    print(json.dumps({"which": which, "extra_mib": (peak - before) / 1024, "wall_s": wall}))


def memory(seconds: float, threads: int | None) -> None:
    print(
        f"\n== peak memory above the loaded model, encode + decode of {seconds:g} s (24 kHz), one process each"
    )
    for which in ("snac", "rvqkit", "rvqkit-chunked"):
        cmd = [sys.executable, __file__, "--memory-child", which, "--seconds", str(seconds)]
        if threads:
            cmd += ["--threads", str(threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode or not lines:
            print(f"  {which}: failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(lines[-1])
        print(f"  {which:15} {r['extra_mib']:8.0f} MiB  ({r['wall_s']:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--measure", action="store_true", help="differences instead of speed")
    ap.add_argument("--weights", help="a SNAC checkpoint folder instead of random 24 kHz weights")
    ap.add_argument("--memory", type=float, metavar="SECONDS", help="peak memory of SECONDS of audio instead")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_allocator()
    if args.memory_child:
        memory_child(args.memory_child, args.seconds)
        return
    load = os.getloadavg()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    if args.memory:
        memory(args.memory, args.threads)
        return
    t = time.perf_counter()
    ours, ref = build(weights=args.weights)
    print(f"models built in {time.perf_counter() - t:.1f} s")
    if args.measure:
        measure(ours, ref, args.weights or "random snac_24khz weights")
    else:
        speed(ours, ref, args.seconds, args.repeats)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
