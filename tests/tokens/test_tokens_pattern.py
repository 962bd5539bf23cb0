"""Token patterns as data: the index map against a slow reference written from the layouts' definitions,
its cache, the order in which several errors are reported, the public code check, the corpus's use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rvqkit.tokens import TokenError, TokenLayout
from rvqkit.tokens import pattern as pattern_module


def reference(lay: TokenLayout, c: torch.Tensor) -> torch.Tensor:
    """One item's ids from the module docstring's definitions, cell by cell (``[L]`` or ``[n_q, L]``)."""
    v, n_q, frames = lay.vocab, lay.n_q, c.shape[-1]

    def code(k: int, t: int) -> int:
        return v.code_range(k)[0] + int(c[k, t])

    if lay.layout == "flatten":
        rows = [[code(k, t) for t in range(frames) for k in range(n_q)]]
    elif lay.layout == "codebook":
        rows = [[code(k, t) for k in range(n_q) for t in range(frames)]]
    elif lay.layout == "parallel":
        rows = [[code(k, t) for t in range(frames)] for k in range(n_q)]
    else:
        rows = [
            [code(k, s - k) if 0 <= s - k < frames else v.delay_pad[k] for s in range(frames + n_q - 1)]
            for k in range(n_q)
        ]
    rows = [
        ([v.begin] if v.begin is not None else []) + r + ([v.end] if v.end is not None else []) for r in rows
    ]
    out = torch.tensor(rows, dtype=torch.long).view(len(rows), -1)
    return out if lay.multi_stream else out[0]


@pytest.mark.parametrize("name", ["flatten", "codebook", "delay", "parallel"])
@pytest.mark.parametrize("specials", [(False, False), (True, False), (False, True), (True, True)])
def test_pattern_equals_the_definitions(name, specials):
    gen = torch.Generator().manual_seed(4)
    for n_q in (1, 2, 5):
        lay = TokenLayout(name, n_q, 16, 100, begin=specials[0], end=specials[1])
        for frames in (0, 1, 2, 7):
            c = torch.randint(0, 16, (n_q, frames), generator=gen)
            want = reference(lay, c)
            assert torch.equal(lay.encode_item(c), want)
            assert torch.equal(lay.encode(c).ids[0], want)
            assert lay.pattern(frames).length == want.shape[-1] == lay.length(frames)
            assert lay.frames_for(want.shape[-1]) == frames
            back, n = lay.decode(want)
            assert torch.equal(back[0], c) and n.tolist() == [frames]


def test_patterns_are_built_once():
    a = TokenLayout("delay", 8, begin=True)
    b = TokenLayout("delay", 8, offset=5000, begin=True, end=False)  # other ids, same structure
    assert a.pattern(150) is a.pattern(150) is b.pattern(150)
    assert a.pattern(150) is not a.pattern(151)
    assert a.pattern(150) is not TokenLayout("delay", 8, begin=True, end=True).pattern(150)
    long = pattern_module.CACHED_CELLS  # very long items are built each time, not kept
    assert a.pattern(long) is not a.pattern(long)
    assert torch.equal(a.pattern(long).source, a.pattern(long).source)


def test_several_errors_report_the_first_item_and_the_first_check():
    """Items are reported in order whatever their lengths; within an item the begin and end tokens come
    first, then the delay pads by step, then the codes by position."""
    lay = TokenLayout("delay", 3, begin=True, end=True)
    tb = lay.encode(torch.randint(0, 1024, (3, 3, 6)), torch.tensor([6, 2, 6]))
    ids = tb.ids.clone()
    ids[2, 0, 0] = 5  # item 2: begin (a group of another length than item 1)
    ids[1, 1, 1] = 9  # item 1: codebook 1's delay pad at step 0
    ids[1, 0, 2] = 4000  # item 1: a code at an earlier position than its end
    ids[1, 2, 5] = 3  # item 1: end token (2 frames: 1 + 2 + 2 + 1 positions)
    with pytest.raises(TokenError, match="expected the end token") as e:
        lay.decode(ids, tb.attention_mask)
    assert (e.value.item, e.value.stream, e.value.position) == (1, 2, 5)
    ids[1, 2, 5] = lay.vocab.end
    with pytest.raises(TokenError, match="broken delay pattern") as e:
        lay.decode(ids, tb.attention_mask)
    assert (e.value.item, e.value.stream, e.value.position) == (1, 1, 1)
    ids[1, 1, 1] = lay.vocab.delay_pad[1]
    with pytest.raises(TokenError, match="where a code of codebook 0 belongs") as e:
        lay.decode(ids, tb.attention_mask)
    assert (e.value.item, e.value.position) == (1, 2)
    ids[1, 0, 2] = 7
    with pytest.raises(TokenError, match="expected the begin token") as e:
        lay.decode(ids, tb.attention_mask)
    assert e.value.item == 2
    cut = tb.attention_mask.clone()
    cut[0, 5:] = False  # item 0 now has a length no item can have: its own error comes first
    with pytest.raises(TokenError, match="item 0, stream 0, position 4: expected the end token"):
        lay.decode(ids, cut)


def test_check_codes_is_public_and_ordered():
    lay = TokenLayout("flatten", n_q=2, codebook_size=8)
    codes, lengths = lay.check_codes(np.zeros((3, 4, 5), np.int16), [5, 0, 2])
    assert codes.shape == (3, 2, 5) and codes.dtype == torch.long and lengths.tolist() == [5, 0, 2]
    bad = torch.zeros(2, 2, 5, dtype=torch.long)
    bad[0, 1, 3] = 8
    bad[0, 0, 4] = -1
    bad[1, 0, 4] = 99  # past item 1's end: ignored
    with pytest.raises(TokenError, match="item 0: code 8 of codebook 1 at frame 3"):
        lay.check_codes(bad, [5, 4])
    with pytest.raises(TokenError, match="item 0: code 8"):  # item 0's codes before item 1's length
        lay.check_codes(bad, [5, 9])
    with pytest.raises(TokenError, match="item 0: frame length 9 outside"):
        lay.check_codes(bad, [9, 4])


def test_corpus_token_column_is_the_layout_encoding():
    from rvqkit.corpus.tokenize import token_columns

    codes = np.random.default_rng(0).integers(0, 1024, (8, 20))
    for spec in token_columns(["flatten", "delay"], n_q=4, begin=True, end=True):
        got = spec.make(codes)
        assert got.dtype == np.int32
        assert np.array_equal(got, spec.layout.encode(torch.from_numpy(codes)).ids[0].numpy())
    with pytest.raises(TokenError, match="outside"):
        token_columns(["parallel"], n_q=2)[0].make(np.full((2, 3), 1024))
