"""Measure bit-exact speed-ups that need changes in ``rvqkit.nn`` (not made there: this script applies them
as temporary patches to one process, checks that codes and audio stay bit-identical, and times them).

    python benchmarks/nn_proposals.py [--threads N] [--seconds 10]

Proposals (each gives exactly the same floats as the current code):

1. ``conv.pad1d``: reflect padding built with ``torch.cat`` of the two flipped edges and the signal
   instead of ``F.pad(mode="reflect")`` (several times faster on CPU for long signals), and no copy at all
   when both paddings are 0 (every 1x1 convolution of the residual blocks).
2. ``seanet``: ELU in place where its input is an intermediate result (not in the residual block's first
   ELU, whose input feeds the shortcut too), and the residual sum added in place (``a + b == b + a``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import MODELS, build_meta, make_signal, save_meta  # noqa: E402

import rvqkit  # noqa: E402
from rvqkit.nn import conv, seanet  # noqa: E402
from rvqkit.nn.lstm import SLSTM  # noqa: E402


def fast_pad1d(x: torch.Tensor, left: int, right: int, mode: str = "reflect") -> torch.Tensor:
    """Proposal 1: same values as ``conv.pad1d``."""
    if left == 0 and right == 0:
        return x
    if mode != "reflect" or x.shape[-1] <= max(left, right):
        return ORIGINAL["pad1d"](x, left, right, mode)
    parts = [x[..., 1 : left + 1].flip(-1)] if left else []
    parts.append(x)
    if right:
        parts.append(x[..., -right - 1 : -1].flip(-1))
    return torch.cat(parts, dim=-1)


def sequential_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Proposal 2 for ``_Sequential.forward``: ELU in place on intermediate results."""
    for i, layer in enumerate(self.layers):
        if isinstance(layer, SLSTM):
            x = layer(x)[0]
        elif isinstance(layer, nn.ELU) and i > 0:
            x = F.elu(x, layer.alpha, inplace=True)
        else:
            x = layer(x)
    return x


def resnet_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Proposal 2 for ``ResnetBlock.forward``: the second ELU and the residual sum in place."""
    y = x
    for i, layer in enumerate(self.block):
        y = F.elu(y, layer.alpha, inplace=True) if isinstance(layer, nn.ELU) and i > 0 else layer(y)
    return y.add_(self.shortcut(x))


ORIGINAL = {
    "pad1d": conv.pad1d,
    "seq": seanet._Sequential.forward,
    "res": seanet.ResnetBlock.forward,
}


@contextmanager
def proposals(pad: bool = True, inplace: bool = True):
    try:
        if pad:
            conv.pad1d = fast_pad1d
        if inplace:
            seanet._Sequential.forward = sequential_forward
            seanet.ResnetBlock.forward = resnet_forward
        yield
    finally:
        conv.pad1d = ORIGINAL["pad1d"]
        seanet._Sequential.forward = ORIGINAL["seq"]
        seanet.ResnetBlock.forward = ORIGINAL["res"]


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_codec(codec, x, sr: int, encoded, repeats: int) -> tuple[float, float]:
    """Median encode and decode seconds."""
    return (
        median_time(lambda: codec.encode(x, sr, bandwidth=6.0), repeats),
        median_time(lambda: codec.decode(encoded), repeats),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default="24,48", help="comma-separated: 24, 48")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for which in args.models.split(","):
            sr, ch, _ = MODELS[which]
            codec = rvqkit.Codec.from_pretrained(save_meta(build_meta(which), Path(tmp), which))
            x = make_signal(int(args.seconds * sr) + 123, ch, sr, seed=7)
            base = codec.encode(x, sr, bandwidth=6.0)
            base_audio = codec.decode(base)
            t_base = time_codec(codec, x, sr, base, args.repeats)
            for name, kw in (("pad", {"inplace": False}), ("inplace", {"pad": False}), ("both", {})):
                with proposals(**kw):
                    enc = codec.encode(x, sr, bandwidth=6.0)
                    audio = codec.decode(enc)
                    same = torch.equal(enc.codes, base.codes) and torch.equal(audio, base_audio)
                    t = time_codec(codec, x, sr, base, args.repeats)
                print(
                    f"{which} kHz {args.seconds:g} s  {name:>7}: encode {t_base[0]:.3f} → {t[0]:.3f} s, "
                    f"decode {t_base[1]:.3f} → {t[1]:.3f} s, encode+decode {sum(t_base) / sum(t):.2f}× faster; "
                    f"bit-identical codes and audio: {same}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
