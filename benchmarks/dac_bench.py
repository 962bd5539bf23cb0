"""DAC: rvqkit against ``transformers.DacModel`` (same random weights, same process, same threads).

``python benchmarks/dac_bench.py`` (speed, under a minute on 2 idle cores with the defaults):

- one item: encode + decode of ``--seconds`` (10) s at 16 kHz (the published 16 kHz architecture);
- a batch of ``--items`` (16) items of mixed lengths (``--min``..``--max`` s): rvqkit codes each item at
  its own length (exact per item); transformers takes the batch right-padded to its longest item, as its
  ``DacFeatureExtractor`` pads it, then decodes the padded batch.

Each side runs once after a short warm-up; ratios come from the same run. Wall and CPU time (this
process, all its threads) are both printed, with the load average: on a shared machine the load moves
the wall times, the CPU times much less.

``python benchmarks/dac_bench.py counts`` (several minutes): the code-difference counts of docs/dac.md:
descript's against transformers' distance, chunked (windowed) against whole-signal encoding for a few
window/context settings, descript's ``compress`` chunking against whole-signal encoding, and a
right-padded batch against items alone.
"""

from __future__ import annotations

# rvqkit before torch: OpenMP threads then sleep while they wait (rvqkit.runtime). Spinning threads of
# batch-1 calls on a busy machine burned 4x the CPU time (measured: 43 s against 10.6 s).
# isort: off
import rvqkit  # noqa: F401

# isort: on
import argparse
import math
import os
import time
from collections.abc import Callable

import torch

from rvqkit.dac import PRESETS, DacModel, encode_chunked, encode_like_dac_compress, random_dac
from rvqkit.dac.chunked import dac_delay, dac_output_length, default_context_frames
from rvqkit.runtime import tune_allocator


def signal(n: int, sr: int, seed: int) -> torch.Tensor:
    """A speech-like sweep with a tremolo, plus a little noise: ``[1, 1, n]`` float32, peak ~0.3."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / sr
    x = 0.3 * torch.sin(2 * math.pi * (150 + 300 * torch.sin(0.7 * t)) * t) * (0.6 + 0.4 * torch.sin(5 * t))
    return (x + 0.02 * torch.randn(n, generator=g, dtype=torch.float64)).float()[None, None]


def hf_twin(model: DacModel):
    import transformers

    hf_cfg = {
        k: v for k, v in model.config.to_hf_config().items() if k not in ("architectures", "torch_dtype")
    }
    hf_cfg.pop("model_type")
    hf = transformers.DacModel(transformers.DacConfig(**hf_cfg)).eval()
    hf.load_state_dict(model.state_dict())
    return hf


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time is the steadier."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def report(what: str, ours: tuple[float, float], hf: tuple[float, float]) -> None:
    print(
        f"{what}: rvqkit {ours[0]:.2f} s wall / {ours[1]:.2f} s CPU, transformers {hf[0]:.2f} s / "
        f"{hf[1]:.2f} s; transformers / rvqkit: {hf[0] / ours[0]:.2f}x wall, {hf[1] / ours[1]:.2f}x CPU "
        f"(load {load()})"
    )


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?"


@torch.inference_mode()
def speed(args: argparse.Namespace) -> None:
    tune_allocator()
    cfg = PRESETS[args.model]
    sr, hop = cfg.sampling_rate, cfg.hop_length
    ours = random_dac(cfg, seed=0)
    hf = hf_twin(ours)
    print(f"{cfg.name}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load()}")
    warm = signal(sr // 2, sr, 9)
    ours.decode(ours.encode(warm))
    hf.decode(audio_codes=hf.encode(ours.pad_to_frames(warm)).audio_codes)

    x = signal(int(args.seconds * sr), sr, 1)

    def ours_one() -> None:
        ours.decode(ours.encode(x), x.shape[-1])

    def hf_one() -> None:
        codes = hf.encode(ours.pad_to_frames(x)).audio_codes
        hf.decode(audio_codes=codes).audio_values[..., : x.shape[-1]]

    t_ours, t_hf = timed(ours_one), timed(hf_one)
    report(f"one item, {args.seconds:g} s, encode + decode", t_ours, t_hf)

    g = torch.Generator().manual_seed(2)
    lengths = [
        int(sr * (args.min + (args.max - args.min) * float(torch.rand(1, generator=g))))
        for _ in range(args.items)
    ]
    items = [signal(n, sr, 10 + i)[0] for i, n in enumerate(lengths)]

    def ours_batch() -> None:
        ours.decode_items(ours.encode_items(items), lengths)

    def hf_batch() -> None:
        width = -(-max(lengths) // hop) * hop  # DacFeatureExtractor: longest item, a multiple of the hop
        batch = torch.zeros(len(items), 1, width)
        for i, item in enumerate(items):
            batch[i, :, : item.shape[-1]] = item
        audio = hf.decode(audio_codes=hf.encode(batch).audio_codes).audio_values
        [audio[i, :n] for i, n in enumerate(lengths)]

    t_ours, t_hf = timed(ours_batch), timed(hf_batch)
    report(
        f"batch of {args.items} items of {min(lengths) / sr:.2f}-{max(lengths) / sr:.2f} s "
        f"({sum(lengths) / sr:.1f} s in all, {len(items) * max(lengths) / sr:.1f} s padded), encode + decode",
        t_ours,
        t_hf,
    )


# -- code-difference counts -------------------------------------------------------------------------------
@torch.inference_mode()
def count_distances(seconds: float) -> None:
    print("## descript's distance against transformers' (same latents, both formulas)")
    for name in ("dac_44khz", "dac_24khz", "dac_16khz", "dac_44khz_16kbps"):
        cfg = PRESETS[name]
        model = random_dac(cfg, seed=0)
        differ = frames = total = 0
        n = int(seconds * cfg.sampling_rate)
        g = torch.Generator().manual_seed(0)
        for x in (
            signal(n, cfg.sampling_rate, 0),
            signal(n, cfg.sampling_rate, 1),
            0.1 * torch.randn(1, 1, n, generator=g),
        ):
            latents = model.embed(x)
            a = model.quantizer.encode(latents, cfg.num_codebooks, "descript")
            b = model.quantizer.encode(latents, cfg.num_codebooks, "transformers")
            differ += int((a != b).sum())
            frames += int((a != b).any(1).sum())
            total += a.numel()
        print(
            f"{name}: {differ} of {total} codes differ, in {frames} frames (2 sweeps and white noise, {seconds:g} s each)"
        )


@torch.inference_mode()
def count_chunked(name: str, seconds: float) -> None:
    cfg = PRESETS[name]
    model = random_dac(cfg, seed=0)
    sr = cfg.sampling_rate
    x = signal(int(seconds * sr), sr, 5)
    whole = model.encode(x)
    print(f"## {name}, {seconds:g} s: chunked encode against whole-signal ({whole.numel()} codes)")
    full = default_context_frames(model)
    for window_s in (2.0, 5.0):
        win = round(window_s * cfg.frame_rate)
        for ctx in (0, 2, 4, full):
            d = encode_chunked(model, x, window_frames=win, context_frames=ctx) != whole
            print(
                f"window {window_s:g} s ({win} frames), context {ctx} frames: {int(d.sum())} codes differ "
                f"({100 * float(d.float().mean()):.2f} %), in {int(d.any(1).sum())} frames"
            )
    for win_duration in (1.0, 5.0):
        codes = encode_like_dac_compress(model, x, win_duration=win_duration)
        n_samples = math.ceil(int(win_duration * sr) / cfg.hop_length) * cfg.hop_length
        step = dac_output_length(model, n_samples)
        per_window = codes.shape[-1] // -(-x.shape[-1] // step)
        # Window i's frame j reads the samples whole-signal frame f reads when
        # f * hop - rf.left == i * step - delay + j * hop: aligned only when that f is a whole number.
        rf_left = model.receptive_field.left
        same = aligned = compared = 0
        for i in range(codes.shape[-1] // per_window):
            shift = (i * step - dac_delay(model) + rf_left) / cfg.hop_length
            f0 = round(shift)
            for j in range(per_window):
                f = f0 + j
                if 0 <= f < whole.shape[-1]:
                    compared += 1
                    aligned += shift == f0
                    same += int(torch.equal(codes[0, :, i * per_window + j], whole[0, :, f]))
        print(
            f"descript compress, win_duration {win_duration:g} s: {codes.shape[-1]} frames for "
            f"{whole.shape[-1]}; windows every {step / cfg.hop_length:.3f} frames; of {compared} frames compared "
            f"with the nearest whole-signal frame, {aligned} are on the same sample grid, "
            f"{compared - same} differ in at least one codebook"
        )


@torch.inference_mode()
def count_padded_batch(name: str) -> None:
    cfg = PRESETS[name]
    model = random_dac(cfg, seed=0)
    sr = cfg.sampling_rate
    g = torch.Generator().manual_seed(3)
    lengths = [int(sr * (0.5 + 2.5 * float(torch.rand(1, generator=g)))) for _ in range(16)]
    items = [signal(n, sr, 20 + i)[0] for i, n in enumerate(lengths)]
    alone = model.encode_items(items)
    batch = torch.zeros(len(items), 1, max(lengths))
    for i, item in enumerate(items):
        batch[i, :, : item.shape[-1]] = item
    codes = model.encode(batch)
    differ = [int((codes[i, :, : c.shape[-1]] != c).sum()) for i, c in enumerate(alone)]
    frames = [int((codes[i, :, : c.shape[-1]] != c).any(0).sum()) for i, c in enumerate(alone)]
    total = sum(c.numel() for c in alone)
    print(
        f"## {name}: a right-padded batch of 16 items (0.5-3 s) against each item alone: {sum(differ)} of "
        f"{total} codes differ, in {sum(frames)} frames; per item (frames): {frames}"
    )


def counts(args: argparse.Namespace) -> None:
    tune_allocator()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load()}")
    count_distances(args.seconds)
    count_chunked("dac_16khz", 3 * args.seconds)
    count_chunked("dac_44khz", 2 * args.seconds)
    count_padded_batch("dac_16khz")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", choices=("speed", "counts"), default="speed")
    parser.add_argument("--model", default="dac_16khz", choices=sorted(PRESETS))
    parser.add_argument("--seconds", type=float, default=10.0, help="one item's length (counts: per signal)")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--min", type=float, default=0.1, help="shortest batch item, seconds")
    parser.add_argument("--max", type=float, default=0.8, help="longest batch item, seconds")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    (speed if args.mode == "speed" else counts)(args)


if __name__ == "__main__":
    main()
