"""The ``.ecdc`` format as a pure format: it imports no network, takes any predictor as its LM, checks its
own header when made; :mod:`rvqkit.compress` joins it to the codec (old names still importable)."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from rvqkit.bitstream import BitstreamError, EcdcHeader, EcdcReader, EcdcWriter, bitpack, read_ecdc
from rvqkit.config import PRESETS


def _imports(tree: ast.AST, skip: str | None):
    """Import statements of a module, except those inside the function named ``skip``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef) and node.name == skip:
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node, skip)


def test_the_format_imports_no_model():
    """No module of rvqkit.bitstream imports the network, the LM, the codec or what joins them (the
    package rvqkit itself imports Codec, so this reads the imports rather than sys.modules). The one
    exception is the package's ``__getattr__``, which reaches rvqkit.compress for the old names only
    when they are asked for."""
    import rvqkit.bitstream

    upward = {"model", "codec", "stream", "chunked", "lm", "compress", "nn", "quant", "server", "cli"}
    folder = Path(rvqkit.bitstream.__file__).parent
    for path in sorted(folder.glob("*.py")):
        skip = "__getattr__" if path.name == "__init__.py" else None
        for node in _imports(ast.parse(path.read_text()), skip):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("rvqkit") for a in node.names), ast.unparse(node)
                continue
            if node.level == 0:
                assert not (node.module or "").startswith("rvqkit"), f"{path.name}: {ast.unparse(node)}"
            elif node.level >= 2:
                names = [node.module] if node.module else [a.name for a in node.names]
                assert not {n.split(".")[0] for n in names} & upward, f"{path.name}: {ast.unparse(node)}"


def test_old_names_reach_compress():
    import rvqkit.bitstream
    import rvqkit.compress

    for name in (
        "compress",
        "decompress",
        "compress_file",
        "decompress_file",
        "compress_to_file",
        "resolve_lm",
    ):
        assert getattr(rvqkit.bitstream, name) is getattr(rvqkit.compress, name)
    with pytest.raises(AttributeError):
        rvqkit.bitstream.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("dac_44khz", 100, 8, False), "unknown model 'dac_44khz'"),
        (("encodec_24khz", -1, 8, False), "audio length -1 samples is absurd"),
        (("encodec_24khz", 86400 * 24000 + 1, 8, False), "absurd"),
        (("encodec_24khz", 100.0, 8, False), "absurd"),
        (("encodec_48khz", 100, 17, False), "17 codebooks"),
        (("encodec_24khz", 100, True, False), "codebooks"),
        (("encodec_24khz", 100, 8, 1), '"lm" must be true or false'),
    ],
)
def test_header_checks_itself(args, message):
    with pytest.raises(BitstreamError, match=message):
        EcdcHeader(*args)


def test_header_bytes_round_trip():
    for live in (False, True):
        h = EcdcHeader("encodec_48khz", 96000, 4, True)
        raw = h.to_bytes(live=live)
        size = EcdcHeader.parse_prefix(raw[:9])
        assert size == len(raw) - 9 and EcdcHeader.parse_meta(raw[9:]) == h
    assert EcdcHeader("encodec_48khz", 96000, 4, False).segment_frames() == [150, 150, 3]


def test_unpack_reads_as_the_bit_reader_does():
    values = np.random.default_rng(1).integers(0, 1024, 101)
    data = bitpack.pack(values, 10)
    assert np.array_equal(bitpack.unpack(data, 10, 101), values)
    assert np.array_equal(bitpack.unpack(data, 10, 50, bit_offset=10 * 51), values[51:])
    reader = bitpack.BitReader()
    reader.feed(data[:7])
    reader.feed(data[7:])
    assert np.array_equal(reader.read_array(101, 10), values)


class Skewed:
    """A predictor that is no network: the next code is likely the previous one plus one."""

    def __init__(self, n_q: int = 32, card: int = 1024) -> None:
        self.n_q, self.card, self.checked = n_q, card, []

    def initial_state(self) -> int:
        return 0

    def step(self, previous, state, n_q):
        probs = torch.full((n_q, self.card), 1.0)
        if previous is not None:
            probs[torch.arange(n_q), (previous + 1) % self.card] = 500.0
        return probs / probs.sum(-1, keepdim=True), state + 1

    def check_codec(self, config) -> None:
        self.checked.append(config.name)
        if config.num_codebooks != self.n_q:
            raise ValueError(f"the LM given is for another model ({self.n_q} codebooks)")

    def decode_hint(self) -> str:
        return " -- a hint from the predictor"


def test_any_predictor_entropy_codes():
    """The coder takes any object with the Predictor's members; a good prediction makes fewer bytes."""
    n_q, frames = 4, 60
    codes = (torch.arange(frames)[None] + torch.arange(n_q)[:, None] * 7) % 1024
    lm = Skewed()
    coded, packed = io.BytesIO(), io.BytesIO()
    for fo, model_lm in ((coded, lm), (packed, None)):
        w = EcdcWriter(fo, "encodec_24khz", n_q, frames * 320, lm=model_lm)
        w.write_frames(codes)
        w.close()
    assert lm.checked == ["encodec_24khz"]
    assert len(coded.getvalue()) < len(packed.getvalue()) / 2
    back = read_ecdc(io.BytesIO(coded.getvalue()), lm=Skewed())
    assert torch.equal(back.codes[0], codes)
    with pytest.raises(BitstreamError, match=r"another model \(16 codebooks\)"):
        read_ecdc(io.BytesIO(coded.getvalue()), lm=Skewed(n_q=16))
    reader = EcdcReader(Skewed())
    reader.feed(coded.getvalue()[:-3])
    with pytest.raises(BitstreamError, match="truncated .* -- a hint from the predictor"):
        reader.finish()


@pytest.mark.parametrize("length", [-320, 0, 320 * 10**12])
def test_live_writer_refuses_a_wrong_final_length(length):
    w = EcdcWriter(io.BytesIO(), "encodec_24khz", 2)
    w.write_frames(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(BitstreamError, match="does not match the 3 frames written"):
        w.close(length)
    assert PRESETS["encodec_24khz"].hop_length == 320
