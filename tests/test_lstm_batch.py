"""The encoder's LSTM batched across items (``Codec.encode(lstm_batch=...)``, the engine's "batched" rows,
the corpus default on CPU): an item's floats must not depend on which items share its LSTM calls."""

from __future__ import annotations

import pytest
import torch
from conftest import make_signal

from rvqkit.errors import RvqkitError


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def test_lstm_rows_do_not_depend_on_batch_or_padding(threads):
    """The fact the engine's batched rows rest on: with 2 or more rows, oneDNN's LSTM gives a row the same floats
    whatever the other rows, their number and the zero padding at the end (EnCodec's size: 512, 2 layers)."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(512, 512, 2).eval()
    lengths = [90, 75, 61, 33, 1, 88]
    xs = [torch.randn(n, 512) for n in lengths]

    def run(rows: list[int], width: int) -> list[torch.Tensor]:
        batch = torch.zeros(width, max(2, len(rows)), 512)
        for j, i in enumerate(rows):
            batch[: lengths[i], j] = xs[i]
        with torch.inference_mode():
            y = lstm(batch)[0]
        return [y[: lengths[i], j] for j, i in enumerate(rows)]

    ref = [run([i], lengths[i])[0] for i in range(len(xs))]  # each beside a zero row
    cases = [
        ([0, 1], 90),
        ([2, 0, 4], 95),
        ([5, 3, 1, 0, 2], 90),
        (list(range(6)), 130),
        (list(range(6)) * 3, 96),
    ]
    for rows, width in cases:  # the last: 18 rows (a corpus may set --lstm-batch 16 or more)
        for i, y in zip(rows, run(rows, width), strict=True):
            assert torch.equal(y, ref[i]), (rows, width, i)


def _items(sr: int, channels: int, seconds: list[float]) -> list[torch.Tensor]:
    return [torch.from_numpy(make_signal(int(sr * s), channels, sr, seed=k)) for k, s in enumerate(seconds)]


def test_codec_encode_lstm_batch(codec24, codec48):
    for codec in (codec24, codec48):
        items = _items(codec.sample_rate, codec.channels, [0.6, 2.3, 1.1])
        sr = codec.sample_rate
        batched = codec.encode(items, sr, 6.0, lstm_batch=8)
        for i, x in enumerate(items):
            one = codec.encode(x, sr, 6.0, lstm_batch=8)
            f = int(one.frame_lengths[0])
            assert int(batched.frame_lengths[i]) == f and int(batched.lengths[i]) == x.shape[-1]
            assert torch.equal(batched.codes[i, :, :f], one.codes[0])
            if codec.config.normalize:
                assert torch.equal(batched.scales[i, : one.scales.shape[1]], one.scales[0])
            default = codec.encode(x, sr, 6.0)
            assert (batched.codes[i, :, :f] == default.codes[0]).float().mean() > 0.99  # near-ties only
            assert torch.equal(codec.encode(x, sr, 6.0, lstm_batch=1).codes, default.codes)
    with pytest.raises(RvqkitError, match="lstm_batch must be at least 1"):
        codec24.encode(items[0], codec24.sample_rate, 6.0, lstm_batch=0)
