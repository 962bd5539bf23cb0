"""Framing facts (rvqkit.framing): the O(1) frame count equals the sum over the segment list."""

from __future__ import annotations

import math
import random

import pytest

from rvqkit.config import ENCODEC_24KHZ, ENCODEC_48KHZ
from rvqkit.framing import frames_for_length, segment_bounds, segment_count


@pytest.mark.parametrize("cfg", [ENCODEC_24KHZ, ENCODEC_48KHZ], ids=lambda c: c.name)
def test_frames_for_length_equals_sum_over_segments(cfg):
    seg = cfg.segment_length or 48000
    lengths = list(range(1, 700)) + [seg - 1, seg, seg + 1, 2 * seg, 3 * seg - 5]
    rng = random.Random(0)
    lengths += [rng.randrange(1, 20 * seg) for _ in range(300)]
    stride = cfg.segment_stride or seg
    lengths += [k * stride + d for k in range(1, 6) for d in (-1, 0, 1, seg - stride, seg - stride + 1)]
    for n in lengths:
        bounds = segment_bounds(cfg, n)
        assert segment_count(cfg, n) == len(bounds), n
        assert frames_for_length(cfg, n) == sum(math.ceil((e - s) / cfg.hop_length) for s, e in bounds), n


def test_huge_declared_length_is_cheap():
    # a length read from a file may be absurd: counting its frames must not build its segment list
    n = 10**15
    frames = frames_for_length(ENCODEC_48KHZ, n)
    assert frames >= n // ENCODEC_48KHZ.hop_length
    assert segment_count(ENCODEC_48KHZ, n) == -(-n // ENCODEC_48KHZ.segment_stride)


def test_feed_rule_without_blocks_takes_the_whole_signal_at_its_end():
    """``step`` 0 (a model with ``block_length=None``): wait for the end, then one final feed of all of it
    (a zero step once fed 0 samples forever)."""
    from rvqkit.model import feed_rule

    assert feed_rule(5 * 24000, False, 0) is None
    assert feed_rule(5 * 24000, True, 0) == (5 * 24000, True)
    assert feed_rule(0, True, 0) == (0, True)
    assert feed_rule(5 * 24000, False, 24000) == (24000, False)
    assert feed_rule(2 * 24000, True, 24000) == (2 * 24000, True)
