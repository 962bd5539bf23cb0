"""Mimi on CPU: rvqkit against transformers' MimiModel (encode + decode of 10 s), and rvqkit's streaming
real-time factor with 80 ms chunks for one stream. Random weights at the published kyutai/mimi
architecture (speed does not depend on the weights' values); both models get the same weights and
input, in the same run, alternately. Ratios > 1 mean rvqkit is faster.

    python benchmarks/mimi_bench.py [--seconds 10] [--repeats 2] [--threads N]
    python benchmarks/mimi_bench.py --exactness   # streamed vs offline codes, a few signals and chunkings
                                                  # (several minutes: hundreds of small streaming steps)

Takes about a minute on a quiet 2-core machine (most of it transformers' and rvqkit's 10 s runs).
"""

from __future__ import annotations

# rvqkit before torch: OpenMP threads then sleep while they wait instead of spinning (rvqkit.runtime);
# spinning threads made one-stream steps 10-20x slower on the busy 2-core machine.
# isort: off
import rvqkit  # noqa: F401

# isort: on
import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

from rvqkit.mimi import MimiConfig, load_mimi, random_mimi, save_hf_folder

SR = 24000
HOP = 1920


def speech_like(seconds: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    f0 = 120 + 30 * torch.sin(2 * torch.pi * 1.5 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / SR
    voiced = sum(torch.sin(h * phase) / h for h in range(1, 12))
    env = (1 + torch.sin(2 * torch.pi * 4 * t)) ** 2 / 8
    x = 0.4 * env * voiced + 0.02 * torch.randn(t.shape, generator=gen, dtype=torch.float64)
    return x.float()[None, None]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def exactness(seconds: float, n_q: int) -> None:
    """Streamed vs offline latents and codes at the published architecture (no transformers needed)."""
    import numpy as np

    model = random_mimi(MimiConfig(), seed=0, fit_seconds=1.0)
    rng = np.random.default_rng(0)
    total = differing = 0
    print(
        "| signal | chunk (samples) | frames | codes differing | max latent difference | max decode difference |"
    )
    print("|---|---|---|---|---|---|")
    for seed in range(3):
        x = speech_like(seconds, seed) if seed != 1 else 0.3 * torch.randn(1, 1, int(seconds * SR) + 777)
        latent = model.latent(x)
        codes = model.quantizer.encode(latent, n_q)
        audio = model.decode(codes)
        for chunk in ("1920", "960", "4801", "random"):
            state, parts, pos = model.init_state(1), [], 0
            while pos < x.shape[-1]:
                n = int(rng.integers(1, 6000)) if chunk == "random" else int(chunk)
                parts.append(model.latent_step(x[..., pos : pos + n], state, final=pos + n >= x.shape[-1]))
                pos += n
            streamed = torch.cat(parts, -1)
            s_codes = model.quantizer.encode(streamed, n_q)
            state = model.init_state(1)
            s_audio = torch.cat(
                [model.decode_step(codes[..., t : t + 1], state) for t in range(codes.shape[-1])], -1
            )
            diff = int((s_codes != codes).sum())
            total += codes.numel()
            differing += diff
            print(
                f"| {'noise' if seed == 1 else f'speech {seed}'} | {chunk} | {codes.shape[-1]} | {diff} | "
                f"{(streamed - latent).abs().max().item():.2g} | {(s_audio - audio).abs().max().item():.2g} |"
            )
    print(f"\ncodes differing in all: {differing} of {total} ({n_q} codebooks)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--n-q", type=int, default=8, help="codebooks for the streaming run (Moshi uses 8)")
    ap.add_argument(
        "--stream-threads",
        type=int,
        default=1,
        help="torch threads for the one-stream run (default 1: an 80 ms step is small operations)",
    )
    ap.add_argument("--exactness", action="store_true", help="measure streamed vs offline codes instead")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    if args.exactness:
        torch.set_num_threads(args.stream_threads)
        exactness(min(args.seconds, 6.0), 32)
        return
    import transformers

    load0 = os.getloadavg()
    model = random_mimi(MimiConfig(), seed=0, fit_seconds=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        save_hf_folder(model, tmp)
        ours, _ = load_mimi(tmp)
        ref = transformers.MimiModel.from_pretrained(tmp).eval()
    x = speech_like(args.seconds)
    print(
        f"# Mimi CPU benchmark: {args.seconds:g} s speech-like signal, random weights (kyutai/mimi architecture)"
    )
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {torch.get_num_threads()} threads, load average {load0[0]:.2f} at start"
    )

    # -- offline: encode + decode, all 32 codebooks -------------------------------------------------------
    warm = x[..., : 2 * SR]
    ours.decode(ours.encode(warm))
    ref.decode(ref.encode(warm).audio_codes)
    t_ours, t_ref = [], []
    for _ in range(args.repeats):
        t_ref.append(timed(lambda: ref.decode(ref.encode(x).audio_codes)))
        t_ours.append(timed(lambda: ours.decode(ours.encode(x))))
    same = torch.equal(ours.encode(x), ref.encode(x).audio_codes)
    r, o = min(t_ref), min(t_ours)
    print(f"\n| offline encode+decode, 32 codebooks | time (s, best of {args.repeats}) | real-time factor |")
    print("|---|---|---|")
    print(f"| transformers MimiModel | {r:.2f} | {r / args.seconds:.3f} |")
    print(f"| rvqkit | {o:.2f} | {o / args.seconds:.3f} |")
    print(f"\nrvqkit / transformers speed ratio: {r / o:.2f}x (codes identical: {same})")

    # -- streaming: 80 ms chunks, one stream, encode then decode each chunk --------------------------------
    offline_threads = torch.get_num_threads()
    torch.set_num_threads(args.stream_threads)
    steps = []
    state = ours.init_state(1)
    for i in range(0, x.shape[-1], HOP):
        start = time.perf_counter()
        codes = ours.encode_step(x[..., i : i + HOP], state, final=i + HOP >= x.shape[-1], n_q=args.n_q)
        ours.decode_step(codes, state)
        steps.append(time.perf_counter() - start)
    total = sum(steps)
    steady = sorted(steps[1:])
    torch.set_num_threads(offline_threads)
    print(
        f"\n| streaming, 80 ms chunks, {args.n_q} codebooks, encode + decode, {args.stream_threads} thread(s) | value |"
    )
    print("|---|---|")
    print(f"| real-time factor (compute / audio) | {total / args.seconds:.3f} |")
    print(f"| per-chunk median (ms) | {1e3 * statistics.median(steady):.1f} |")
    print(f"| per-chunk p90 (ms) | {1e3 * steady[int(0.9 * (len(steady) - 1))]:.1f} |")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
