"""Parity figures (a script, not a test): for both models, every bandwidth and both references
(transformers' EncodecModel and Meta's encodec, random weights saved in their real formats and loaded
through rvqkit), the code mismatches and the max abs audio difference, on a batch of two items of
different lengths (0.1 s and 1.37 s) and on a 30 s input.

    python benchmarks/parity_report.py [--long-seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import conftest as C  # noqa: E402  (the tests' reference-model builders)

from rvqkit import Codec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long-seconds", type=float, default=30.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    meta = C._import_meta_encodec()
    print("| model | reference | input | kbps | n_q | code mismatches / codes | max abs audio diff |")
    print("|---|---|---|---|---|---|---|")
    for which, sr, ch in (("24", 24000, 1), ("48", 48000, 2)):
        meta_model = C._build_meta(meta, which, 1234)
        meta_path = C.save_meta_checkpoint(meta_model, tmp, f"encodec_{which}khz")
        hf_model = C._build_hf(which, 99, tmp / f"hf{which}")
        refs = (
            ("Meta encodec", meta_model, meta_path, C.meta_reference),
            ("transformers", hf_model, tmp / f"hf{which}", C.hf_reference),
        )
        for ref_name, model, src, run in refs:
            codec = Codec.from_pretrained(src)
            short = [
                C.make_signal(n, ch, sr, seed=i)
                for i, n in enumerate((int(0.1 * sr) + 7, int(1.37 * sr) + 11))
            ]
            long = C.make_signal(int(args.long_seconds * sr) + 123, ch, sr, seed=3)
            for label, items, bws in (
                ("batch 0.1 s + 1.37 s", short, codec.bandwidths),
                (f"{args.long_seconds:g} s", [long], codec.bandwidths),
            ):
                for bw in bws:
                    enc = codec.encode(items, sr, bandwidth=bw)
                    audio = codec.decode(enc)
                    bad = total = 0
                    diff = 0.0
                    for i, x in enumerate(items):
                        rc, ra = run(model, x, bw)
                        nf = int(enc.frame_lengths[i])
                        bad += int((enc.codes[i : i + 1, :, :nf] != rc).sum())
                        total += rc.numel()
                        diff = max(diff, (audio[i : i + 1, :, : x.shape[-1]] - ra).abs().max().item())
                    print(
                        f"| {which} kHz | {ref_name} | {label} | {bw:g} | {enc.n_q} | {bad} / {total} | {diff:.2e} |",
                        flush=True,
                    )
    print(f"\ntorch {torch.__version__}")


if __name__ == "__main__":
    main()
