"""Streaming benchmark (a script, not a test): per-chunk latency and real-time factor of rvqkit's
streaming encode+decode at 13.3 / 80 / 320 ms chunks on CPU, and the SNR against the offline output of
(a) the naive method (each 80 ms piece encoded and decoded independently) and (b) rvqkit streaming.

    python benchmarks/stream_latency.py [--model PATH] [--seconds 10] [--threads 2]

Without --model it builds a random-weight 24 kHz model with Meta's package (tests/stubs stands in for
torchaudio); real weights give other SNRs but the same timings.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def random_model_path() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # the tests' random-weight model builder

    model = conftest._build_meta(conftest._import_meta_encodec(), "24", 1234)
    return conftest.save_meta_checkpoint(model, Path(tempfile.mkdtemp()), "encodec_24khz")


def snr_db(ref: np.ndarray, y: np.ndarray) -> float:
    noise = np.sum((ref - y) ** 2)
    return float("inf") if noise == 0 else 10 * np.log10(np.sum(ref**2) / noise)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--bandwidth", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from rvqkit import Codec

    codec = Codec.from_pretrained(args.model or random_model_path())
    sr = codec.sample_rate
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_signal

    x = make_signal(int(args.seconds * sr), codec.channels, sr, seed=1)
    offline = codec.decode(codec.encode(x, sr, bandwidth=args.bandwidth))[0].numpy()

    print(f"# rvqkit streaming benchmark: {codec.name}, {args.bandwidth:g} kbps, {args.seconds:g} s signal")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads, load average {os.getloadavg()[0]:.2f}"
    )
    print()
    print(
        "| method | chunk | per-chunk latency median (ms) | p99 (ms) | real-time factor | SNR vs offline (dB) |"
    )
    print("|---|---|---|---|---|---|")

    # (a) the naive method: every 80 ms piece through the whole model on its own
    piece = int(0.08 * sr)
    outs, times = [], []
    for i in range(0, x.shape[-1], piece):
        t0 = time.perf_counter()
        outs.append(codec.decode(codec.encode(x[:, i : i + piece], sr, bandwidth=args.bandwidth))[0].numpy())
        times.append(time.perf_counter() - t0)
    naive = np.concatenate(outs, axis=-1)
    ms = np.array(times) * 1000
    print(
        f"| naive independent pieces | 80 ms | {np.median(ms):.1f} | {np.percentile(ms, 99):.1f} | "
        f"{sum(times) / args.seconds:.3f} | {snr_db(offline, naive):.1f} |"
    )

    # (b) rvqkit streaming: state carried between calls
    for chunk_ms in (320 / 24, 80.0, 320.0):
        chunk = int(round(chunk_ms * sr / 1000))
        enc, dec = codec.stream_encoder(args.bandwidth), codec.stream_decoder(length=x.shape[-1])
        outs, times = [], []
        for i in range(0, x.shape[-1], chunk):
            t0 = time.perf_counter()
            outs.append(dec.push(enc.push(x[:, i : i + chunk]))[0].numpy())
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        outs.append(dec.push(enc.flush())[0].numpy())
        outs.append(dec.flush()[0].numpy())
        total = sum(times) + time.perf_counter() - t0
        y = np.concatenate(outs, axis=-1)
        ms = np.array(times) * 1000
        print(
            f"| rvqkit streaming | {chunk_ms:.1f} ms ({chunk} samples) | {np.median(ms):.1f} | "
            f"{np.percentile(ms, 99):.1f} | {total / args.seconds:.3f} | {snr_db(offline, y):.1f} |"
        )
    print()
    print("Latency here is compute time per chunk; the algorithmic latency is added to it: a frame's")
    print(
        "codes are final when its last sample arrives (320 samples, 13.3 ms), after a start-up of 7 frames."
    )


if __name__ == "__main__":
    main()
