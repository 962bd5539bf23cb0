"""DAC parity: rvqkit's DAC against ``transformers.DacModel`` with the same random weights.

The weights go through the real formats: rvqkit writes descript's ``.pth`` (weight_g / weight_v under
descript's names), the test converts those g/v tensors into a ``transformers`` folder the way
transformers' converter does (legacy weight norm, load, ``remove_weight_norm``, ``save_pretrained``),
and both files are loaded back through ``rvqkit.dac.load_dac``.

The distance: descript (the authority) and transformers differ in the sign of the ``|c|²`` term. rvqkit
computes either exactly (``distance=``). The reference for descript's formula here is transformers'
model with its ``decode_latents`` computing descript's expression (everything else in the two packages
is the same computation); ``tests/test_dac_descript.py`` checks against descript's package itself
where it can be imported.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from rvqkit.dac import DacConfig, DacModel, load_dac, random_dac, save_dac_pth
from rvqkit.dac.config import DAC_16KHZ

transformers = pytest.importorskip("transformers", reason="transformers is the DAC reference")

pytestmark = pytest.mark.arith

#: A small model with the 16/24 kHz strides (an odd stride, 5, whose decoder gives 320 T - 8 samples).
SMALL_16K = DacConfig(
    name="small_16k",
    sampling_rate=16000,
    encoder_dim=8,
    encoder_rates=(2, 4, 5, 8),
    latent_dim=128,
    decoder_dim=128,
    decoder_rates=(8, 5, 4, 2),
    num_codebooks=12,
)
#: A small model with the 44.1 kHz strides.
SMALL_44K = DacConfig(
    name="small_44k",
    sampling_rate=44100,
    encoder_dim=8,
    encoder_rates=(2, 4, 8, 8),
    latent_dim=128,
    decoder_dim=128,
    decoder_rates=(8, 8, 4, 2),
    num_codebooks=9,
)


def signal(kind: str, n: int, sr: int, seed: int = 0) -> torch.Tensor:
    """Test audio ``[1, 1, n]``: ``noise``, ``sine`` or ``chirp`` (speech-like sweep with noise)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / sr
    if kind == "noise":
        x = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    elif kind == "sine":
        x = 0.5 * torch.sin(2 * torch.pi * 440.0 * t)
    else:
        x = (
            0.3
            * torch.sin(2 * torch.pi * (150.0 + 900.0 * t) * t)
            * (1 + torch.sin(2 * torch.pi * 3 * t))
            / 2
        )
        x = x + 0.02 * torch.randn(n, generator=g, dtype=torch.float64)
    return x.float()[None, None]


# -- descript .pth → transformers folder, as transformers' converter does ---------------------------------
def _descript_to_hf_name(key: str, n_enc: int, n_dec: int) -> str:
    unit = ["snake1", "conv1", "snake2", "conv2"]
    rules = [
        (r"^encoder\.block\.0\.", "encoder.conv1."),
        (rf"^encoder\.block\.{n_enc + 1}\.", "encoder.snake1."),
        (rf"^encoder\.block\.{n_enc + 2}\.", "encoder.conv2."),
        (r"^decoder\.model\.0\.", "decoder.conv1."),
        (rf"^decoder\.model\.{n_dec + 1}\.", "decoder.snake1."),
        (rf"^decoder\.model\.{n_dec + 2}\.", "decoder.conv2."),
    ]
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    m = re.match(r"^encoder\.block\.(\d+)\.block\.(\d+)\.(?:block\.(\d+)\.)?(.*)$", key)
    if m:
        i, j, k, rest = int(m[1]) - 1, int(m[2]), m[3], m[4]
        if k is not None:
            return f"encoder.block.{i}.res_unit{j + 1}.{unit[int(k)]}.{rest}"
        return f"encoder.block.{i}.{'snake1' if j == 3 else 'conv1'}.{rest}"
    m = re.match(r"^decoder\.model\.(\d+)\.block\.(\d+)\.(?:block\.(\d+)\.)?(.*)$", key)
    if m:
        i, j, k, rest = int(m[1]) - 1, int(m[2]), m[3], m[4]
        if k is not None:
            return f"decoder.block.{i}.res_unit{j - 1}.{unit[int(k)]}.{rest}"
        return f"decoder.block.{i}.{'snake1' if j == 0 else 'conv_t1'}.{rest}"
    return key  # quantizer.* keeps its names


def hf_config(cfg: DacConfig):
    return transformers.DacConfig(
        encoder_hidden_size=cfg.encoder_dim,
        downsampling_ratios=list(cfg.encoder_rates),
        decoder_hidden_size=cfg.decoder_dim,
        n_codebooks=cfg.num_codebooks,
        codebook_size=cfg.codebook_size,
        codebook_dim=cfg.codebook_dim,
        sampling_rate=cfg.sampling_rate,
    )


def convert_pth_to_hf(pth: Path, folder: Path | None = None):
    """The ``.pth``'s g/v into a ``transformers`` model: legacy weight norm on every convolution of a
    ``DacModel``, the g/v loaded, the weight norm removed (on CPU), as transformers' converter does;
    saved with ``save_pretrained`` into ``folder`` if given. Returns the model."""
    package = torch.load(pth, map_location="cpu", weights_only=True)
    kwargs = package["metadata"]["kwargs"]
    cfg = DacConfig.from_dac_kwargs(kwargs)
    model = transformers.DacModel(hf_config(cfg)).eval()
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    for m in convs:
        torch.nn.utils.weight_norm(m)
    n_enc, n_dec = len(kwargs["encoder_rates"]), len(kwargs["decoder_rates"])
    state = {_descript_to_hf_name(k, n_enc, n_dec): v for k, v in package["state_dict"].items()}
    model.load_state_dict(state, strict=True)
    for m in convs:
        torch.nn.utils.remove_weight_norm(m)
    if folder is not None:
        model.save_pretrained(folder)
    return model


def _descript_decode_latents(self, latents):
    """descript's ``VectorQuantize.decode_latents`` (dac 1.0.0): ``dist = |e|² - 2 e·c + |c|²``, argmax of ``-dist``."""
    b, d, t = latents.shape
    encodings = F.normalize(latents.permute(0, 2, 1).reshape(b * t, d))
    codebook = F.normalize(self.codebook.weight)
    dist = (
        encodings.pow(2).sum(1, keepdim=True)
        - 2 * encodings @ codebook.t()
        + codebook.pow(2).sum(1, keepdim=True).t()
    )
    indices = (-dist).max(1)[1].reshape(b, t)
    return self.codebook(indices).transpose(1, 2), indices


class Pair:
    """rvqkit's model loaded from the .pth (and from the converted transformers folder, if ``folder``),
    and the transformers reference converted from the same .pth."""

    def __init__(self, cfg: DacConfig, tmp: Path, seed: int = 0, folder: bool = True) -> None:
        pth = save_dac_pth(random_dac(cfg, seed), tmp / "weights.pth")
        self.ours, self.cfg = load_dac(pth)
        if folder:
            convert_pth_to_hf(pth, tmp / "hf")
            self.ours_hf: DacModel | None = load_dac(tmp / "hf")[0]
            self.hf = transformers.DacModel.from_pretrained(tmp / "hf").eval()
        else:
            self.ours_hf, self.hf = None, convert_pth_to_hf(pth)

    @torch.no_grad()
    def reference_codes(self, x: torch.Tensor, n_q: int, distance: str) -> torch.Tensor:
        """transformers' codes, or with ``distance="descript"`` its model computing descript's distance."""
        quantizers = self.hf.quantizer.quantizers
        if distance == "descript":
            for q in quantizers:
                q.decode_latents = types.MethodType(_descript_decode_latents, q)
        try:
            return self.hf.encode(self.ours.pad_to_frames(x), n_quantizers=n_q).audio_codes
        finally:
            for q in quantizers:
                q.__dict__.pop("decode_latents", None)

    @torch.no_grad()
    def reference_audio(self, codes: torch.Tensor) -> torch.Tensor:
        return self.hf.decode(audio_codes=codes).audio_values[:, None]


@pytest.fixture(scope="module")
def pair16(tmp_path_factory) -> Pair:
    return Pair(SMALL_16K, tmp_path_factory.mktemp("dac16"))


@pytest.fixture(scope="module")
def pair44(tmp_path_factory) -> Pair:
    return Pair(SMALL_44K, tmp_path_factory.mktemp("dac44"), seed=1)


def _check(pair: Pair, x: torch.Tensor, n_q: int) -> None:
    for distance in ("descript", "transformers"):
        for model in (m for m in (pair.ours, pair.ours_hf) if m is not None):
            model.distance = distance
            codes = model.encode(x, n_q)
            ref = pair.reference_codes(x, n_q, distance)
            assert codes.shape == ref.shape == (x.shape[0], n_q, model.frames_for_length(x.shape[-1]))
            assert torch.equal(codes, ref), f"{distance}: {(codes != ref).sum().item()} codes differ"
            model.distance = "descript"
    codes = pair.ours.encode(x, n_q)
    assert codes.unique().numel() > 20  # the random model's codes are varied: equality means something
    audio = pair.ours.decode(codes)
    ref_audio = pair.reference_audio(codes)
    assert audio.shape == ref_audio.shape
    assert audio.abs().max().item() > 1e-3
    assert (audio - ref_audio).abs().max().item() <= 1e-4
    if pair.ours_hf is not None:
        assert torch.equal(pair.ours_hf.decode(codes), audio)


@pytest.mark.parametrize(
    ("kind", "seconds", "extra"), [("noise", 1, 17), ("sine", 2, 319), ("chirp", 3, 1), ("chirp", 1, 160)]
)
def test_parity_16k_strides(pair16, kind, seconds, extra):
    x = signal(kind, seconds * 16000 + extra, 16000, seed=seconds)
    _check(pair16, x, SMALL_16K.num_codebooks)


@pytest.mark.parametrize(("kind", "extra"), [("noise", 5), ("chirp", 511)])
def test_parity_44k_strides(pair44, kind, extra):
    x = signal(kind, 44100 + extra, 44100, seed=extra)
    _check(pair44, x, SMALL_44K.num_codebooks)


def test_parity_fewer_codebooks_and_batch(pair16):
    """n_q below the model's count is a prefix; a batch of equal-length rows matches the reference's batch."""
    x = torch.cat([signal("chirp", 16000 + 99, 16000, seed=s) for s in range(3)])
    _check(pair16, x, 4)
    full = pair16.ours.encode(x)
    assert torch.equal(pair16.ours.encode(x, 4), full[:, :4])


def test_parity_full_size_16khz(tmp_path):
    """The published 16 kHz architecture (74 M parameters), 1.2 s of speech-like audio, 12 codebooks
    (the transformers folder is tested with the small models: here the converted model is used as it is)."""
    pair = Pair(DAC_16KHZ, tmp_path, folder=False)
    x = signal("chirp", 16000 + 4321, 16000, seed=7)
    _check(pair, x, DAC_16KHZ.num_codebooks)


def count_distance_differences(model: DacModel, xs: list[torch.Tensor]) -> tuple[int, int, list[float]]:
    """Codes that descript's and transformers' distances pick differently over ``xs``: (differing codes,
    all codes, the descript-score gap of each first differing codebook of a frame)."""
    differ = total = 0
    gaps: list[float] = []
    with torch.inference_mode():
        for x in xs:
            model.distance = "descript"
            a = model.encode(x)
            model.distance = "transformers"
            b = model.encode(x)
            model.distance = "descript"
            differ += int((a != b).sum())
            total += a.numel()
            latents = model.embed(x)
            for bi, t in (a != b).any(1).nonzero().tolist():
                k = int((a[bi, :, t] != b[bi, :, t]).nonzero()[0])
                residual = latents[bi : bi + 1, :, t : t + 1]
                for j in range(k):  # the residual before codebook k (the same for both: codes agree so far)
                    q = model.quantizer.quantizers[j]
                    z_e = q.in_proj(residual)
                    residual = residual - q.out_proj(z_e + (q.lookup(a[bi : bi + 1, j, t : t + 1]) - z_e))
                q = model.quantizer.quantizers[k]
                e = F.normalize(q.in_proj(residual)[0, :, 0].double(), dim=0)
                book = F.normalize(q.codebook.weight.double())
                cos = book @ e
                gaps.append(abs(float(cos[a[bi, k, t]] - cos[b[bi, k, t]])))
    return differ, total, gaps


def test_distance_formulas_differ_only_at_near_ties(pair16, pair44):
    """Every code where descript's and transformers' formulas disagree is a near-tie: the two entries'
    cosine similarities (in float64) agree to float32 rounding. Prints the count (docs/dac.md)."""
    xs16 = [signal(k, 3 * 16000 + 7, 16000, seed=i) for i, k in enumerate(("noise", "sine", "chirp"))]
    xs44 = [signal(k, 2 * 44100 + 7, 44100, seed=i) for i, k in enumerate(("noise", "sine", "chirp"))]
    for pair, xs in ((pair16, xs16), (pair44, xs44)):
        differ, total, gaps = count_distance_differences(pair.ours, xs)
        print(f"{pair.cfg.name}: {differ} of {total} codes differ between the distances; gaps {gaps}")
        assert all(g < 1e-6 for g in gaps), gaps
