"""Arithmetic cost of EnCodec, counted layer by layer on a real forward pass, and the machine's conv peak.

A FLOP is one multiply or one add, so a multiply-accumulate is 2 FLOP. Counted:

- ``Conv1d``: ``2 · C_in/groups · K · C_out · T_out`` per item;
- ``ConvTranspose1d``: ``2 · C_in · K · C_out · T_in`` per item (every input sample meets every tap);
- ``LSTM`` layer: ``2 · 4H · (I + H)`` per time step per item (the four gates' input and recurrent
  matrix products; gate nonlinearities and the cell update are not counted);
- quantizer: ``2 · D · 1024`` per codebook per frame for the distance matrix product when encoding
  (reported separately; the issue's 5.96 / 12.6 GFLOP figures are convolutions + LSTM).

Elementwise work (ELU, padding, group norm, residual additions) moves memory but is not counted.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class Cost:
    """FLOP of one pass, by kind (``conv``, ``lstm``) and by layer name."""

    by_kind: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_layer: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def total(self) -> float:
        return sum(self.by_kind.values())


def _hook(cost: Cost, name: str):
    def hook(module: nn.Module, inputs, output) -> None:
        x = inputs[0]
        if isinstance(module, nn.ConvTranspose1d):
            b, cin, t_in = x.shape
            f = 2 * b * cin * module.kernel_size[0] * module.out_channels * t_in
            kind = "conv"
        elif isinstance(module, nn.Conv1d):
            b, cout, t_out = output.shape
            f = 2 * b * (module.in_channels // module.groups) * module.kernel_size[0] * cout * t_out
            kind = "conv"
        elif isinstance(module, nn.LSTM):
            t, b, i = x.shape  # sequence-first, as EnCodec runs it
            h = module.hidden_size
            f = 0
            for layer in range(module.num_layers):
                f += 2 * 4 * h * ((i if layer == 0 else h) + h) * t * b
            kind = "lstm"
        else:
            return
        cost.by_kind[kind] += f
        cost.by_layer[name] += f

    return hook


@torch.inference_mode()
def codec_cost(codec, seconds: float, bandwidth: float) -> dict[str, float]:
    """FLOP per audio-second of ``codec`` (an :class:`rvqkit.Codec`) on a ``seconds``-long input, counted
    on its real encode and decode paths (so the 48 kHz segment overlap is included).

    Returns ``enc_conv``, ``enc_lstm``, ``dec_conv``, ``dec_lstm``, ``quant`` (encode-side distance
    products), ``encode``, ``decode`` and ``total`` (= encode + decode, convolutions + LSTM), all in
    FLOP per audio-second.
    """
    model = codec.model
    n = int(seconds * codec.sample_rate)
    x = torch.randn(1, codec.channels, n) * 0.1
    enc = Cost()
    dec = Cost()
    hooks = []
    for part, cost in ((model.encoder, enc), (model.decoder, dec)):
        for name, m in part.named_modules():
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.LSTM)):
                hooks.append(m.register_forward_hook(_hook(cost, name)))
    block, model.block_length = model.block_length, None  # whole-signal calls: every layer's forward runs
    try:
        encoded = codec.encode(x, codec.sample_rate, bandwidth=bandwidth)
        codec.decode(encoded)
    finally:
        model.block_length = block
        for h in hooks:
            h.remove()
    frames = int(encoded.frame_lengths[0])
    quant = 2 * model.config.hidden_size * model.config.codebook_size * encoded.n_q * frames
    out = {
        "enc_conv": enc.by_kind["conv"],
        "enc_lstm": enc.by_kind["lstm"],
        "dec_conv": dec.by_kind["conv"],
        "dec_lstm": dec.by_kind["lstm"],
        "quant": quant,
    }
    out = {k: v / seconds for k, v in out.items()}
    out["encode"] = out["enc_conv"] + out["enc_lstm"]
    out["decode"] = out["dec_conv"] + out["dec_lstm"]
    out["total"] = out["encode"] + out["decode"]
    return out


def conv_peak(
    channels: int = 512, kernel: int = 7, length: int = 4096, batch: int = 1, repeats: int = 20
) -> dict[str, float]:
    """Measured GFLOP/s of one wide ``F.conv1d`` (``channels`` in and out, ``kernel`` taps, ``length``
    output samples): the machine's practical arithmetic limit for EnCodec-like work.

    Returns the median and the best over ``repeats`` runs (after warm-up).
    """
    x = torch.randn(batch, channels, length + kernel - 1)
    w = torch.randn(channels, channels, kernel) / (channels * kernel) ** 0.5
    flop = 2 * batch * channels * channels * kernel * length
    times = []
    with torch.inference_mode():
        for _ in range(3):
            F.conv1d(x, w)
        for _ in range(repeats):
            t0 = time.perf_counter()
            F.conv1d(x, w)
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {
        "gflops_median": flop / median / 1e9,
        "gflops_best": flop / times[0] / 1e9,
        "flop": float(flop),
        "channels": channels,
        "kernel": kernel,
        "length": length,
    }
