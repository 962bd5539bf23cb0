"""How long ``rvqkit eval`` takes against the model work inside it.

N items of S seconds (tones, chirp and noise at 24 kHz) through the 24 kHz random-weight model at all
bandwidths and all k, timed three ways in one process, one after the other:

- (m) model only: each item encoded once at the top bandwidth and decoded from each distinct k (the
  model work of the report, nothing else);
- (n) naive: each item encoded and decoded at each bandwidth, and decoded from each k of the top
  bandwidth's codes (what a script without the encode-once shortcut does), estimated as (m) plus
  (bandwidths - 1) encodes from the measured encode time;
- (r) the whole report (``run_eval`` with the metrics in 2 worker processes, baselines, LM-coded size
  of 3 items, and ``write_report``).

Usage: python benchmarks/eval_bench.py [--items 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import cpu_model, import_meta_encodec, make_signal  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import _build_meta, save_meta_checkpoint

    from rvqkit import Codec
    from rvqkit.config import PRESETS
    from rvqkit.eval import run_eval, write_report
    from rvqkit.lm import EntropyLM, LMConfig

    tmp = Path(tempfile.mkdtemp(prefix="rvqkit-eval-bench-"))
    path = save_meta_checkpoint(_build_meta(import_meta_encodec(), "24", 1234), tmp, "encodec_24khz")
    torch.manual_seed(5)
    lm = save_meta_checkpoint(
        EntropyLM(LMConfig.for_codec(PRESETS["encodec_24khz"])), tmp, "encodec_lm_24khz"
    )
    codec = Codec.from_pretrained(path)
    sr = codec.sample_rate
    audio = tmp / "audio"
    audio.mkdir()
    for i in range(args.items):
        sf.write(audio / f"{i:03d}.wav", make_signal(int(args.seconds * sr), 1, sr, seed=i).T, sr)
    items = [make_signal(int(args.seconds * sr), 1, sr, seed=i) for i in range(args.items)]
    ks = sorted({*range(1, codec.num_codebooks + 1), *(codec.n_q_for(b) for b in codec.bandwidths)})

    t0 = time.perf_counter()
    enc_s = 0.0
    for x in items:
        t = time.perf_counter()
        e = codec.encode(x, sr, bandwidth=max(codec.bandwidths))
        enc_s += time.perf_counter() - t
        for k in ks:
            codec.decode(e, n_q=k)
    model_s = time.perf_counter() - t0
    naive_s = model_s + (len(codec.bandwidths) - 1) * enc_s

    t0 = time.perf_counter()
    result = run_eval(codec, [audio], lm=lm, lm_items=3, workers=args.workers, examples=3)
    write_report(result, tmp / "report")
    report_s = time.perf_counter() - t0

    n = args.items
    print(f"# rvqkit eval timing: {n} items x {args.seconds:g} s, 24 kHz random-weight model, {cpu_model()}")
    print(
        f"settings per item: {len(codec.bandwidths)} bandwidths + {len(ks)} k + "
        f"{len(result.info['baselines']['used'])} baselines; torch threads {torch.get_num_threads()}"
    )
    print(
        f"(m) model only (1 encode + {len(ks)} decodes per item): {model_s:.1f} s ({model_s / n:.2f} s/item)"
    )
    print(f"(n) naive per-setting encode+decode (estimated): {naive_s:.1f} s ({naive_s / n:.2f} s/item)")
    print(
        f"(r) report: {report_s:.1f} s ({report_s / n:.2f} s/item), of which model {result.info['timing']['model_s']:.1f} s"
    )
    print(f"ratio report / model only: {report_s / model_s:.2f}; report / naive: {report_s / naive_s:.2f}")
    print(
        f"extrapolated to 100 items: report {report_s / n * 100 / 60:.1f} min, model only {model_s / n * 100 / 60:.1f} min"
    )
    print(f"report in {tmp / 'report'}")


if __name__ == "__main__":
    main()
