"""The front door for every codec family: detect_family from names, folders and file headers;
load_family_model's encode/decode equal each family model's own on the same signal (resampled first where
the rate differs); bad input gives one RvqkitError; Codec.from_pretrained names a Mimi/DAC/SNAC source's
family instead of failing as EnCodec. (Random small models saved in each published format.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mimi_helpers import SMALL as MIMI_SMALL
from safetensors.torch import save_file
from snac_helpers import SMALL_PLAIN

from rvqkit import Codec
from rvqkit.audio import resample
from rvqkit.dac import DacConfig, load_dac, random_dac, save_dac_hf, save_dac_pth
from rvqkit.errors import AudioError, RvqkitError, WeightsError
from rvqkit.families import KNOWN_IDS, detect_family, family_of, load_family_model
from rvqkit.family_codec import FamilyCodec
from rvqkit.mimi import load_mimi, random_mimi, save_hf_folder, save_moshi_file
from rvqkit.snac import load_snac, random_snac, save_snac, snac_state_dict
from rvqkit.weights import META_CHECKPOINTS

DAC_TINY = DacConfig(
    name="tiny",
    sampling_rate=16000,
    encoder_dim=4,
    encoder_rates=(2, 4, 5, 8),
    latent_dim=64,
    decoder_dim=64,
    decoder_rates=(8, 5, 4, 2),
    num_codebooks=3,
    codebook_size=64,
)


def _snac_safetensors(folder: Path, out: Path) -> Path:
    out.mkdir()
    (out / "config.json").write_bytes((folder / "config.json").read_bytes())
    save_file(torch.load(folder / "pytorch_model.bin", weights_only=True), str(out / "model.safetensors"))
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, list[tuple[str, Path]]]:
    """family -> [(format, path)] for every published format each family loads from."""
    root = tmp_path_factory.mktemp("families")
    mimi = random_mimi(MIMI_SMALL, seed=3)
    dac = random_dac(DAC_TINY, seed=1)
    snac = random_snac(SMALL_PLAIN, seed=2)
    snac_bin = save_snac(root / "snac_bin", snac_state_dict(snac), SMALL_PLAIN)
    return {
        "mimi": [
            ("transformers", save_hf_folder(mimi, root / "mimi_hf")),
            ("moshi", save_moshi_file(mimi, root / "tokenizer.safetensors")),
        ],
        "dac": [
            ("descript", save_dac_pth(dac, root / "weights.pth")),
            ("transformers", save_dac_hf(dac, root / "dac_hf")),
        ],
        "snac": [
            ("pytorch_model.bin", snac_bin),
            ("model.safetensors", _snac_safetensors(snac_bin, root / "snac_st")),
        ],
    }


LOADERS = {"mimi": load_mimi, "dac": load_dac, "snac": load_snac}
CASES = [(f, i) for f in ("mimi", "dac", "snac") for i in (0, 1)]


def _signal(n: int, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = 0.4 * np.sin(2 * np.pi * (180 + 300 * t) * t) + 0.05 * rng.standard_normal(n)
    return x.astype(np.float32)


def _own_encode(family: str, model, x: np.ndarray, n_q: int | None):
    """The family model's own encode of one mono signal at its rate."""
    t = torch.from_numpy(x)[None, None]
    with torch.inference_mode():
        if family == "snac":
            return [c[0] for c in model.encode(t, n_q)]
        return model.encode(t, n_q)[0]


def _own_decode(family: str, model, codes) -> torch.Tensor:
    with torch.inference_mode():
        if family == "snac":
            return model.decode([c[None] for c in codes])[0]
        return model.decode(codes[None])[0]


def _same_codes(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    return torch.equal(a, b)


@pytest.mark.parametrize("family,index", CASES)
def test_detect_and_parity(sources, family, index):
    fmt, path = sources[family][index]
    assert detect_family(path) == family, fmt
    fc = load_family_model(path)
    assert isinstance(fc, FamilyCodec) and fc.family == family and fc.channels == 1
    model, config = LOADERS[family](path)
    assert fc.sample_rate == config.sampling_rate and fc.num_codebooks == config.num_codebooks
    assert fc.frame_rate == pytest.approx(config.sampling_rate / config.hop_length)
    n = int(0.7 * fc.sample_rate) + 37  # not a multiple of any hop
    x = _signal(n, fc.sample_rate)
    n_q = 2
    codes = fc.encode(x, fc.sample_rate, n_q=n_q)
    own = _own_encode(family, model, x, n_q)
    assert _same_codes(codes, own), fmt
    if family == "snac":
        assert all(c.dtype == torch.int64 and c.ndim == 1 for c in codes) and len(codes) == n_q
    else:
        assert codes.dtype == torch.int64 and codes.shape[0] == n_q
    audio = fc.decode(codes)
    assert audio.dtype == torch.float32 and audio.ndim == 2 and audio.shape[0] == 1
    assert torch.equal(audio, _own_decode(family, model, own))
    assert torch.equal(fc.decode(codes, length=n), audio[:, :n])  # cut to the input's samples
    assert torch.equal(fc.decode(codes, length=audio.shape[-1] + 5)[:, -5:], torch.zeros(1, 5))
    # a torch [1, T] item and int16 PCM go through the same rules as EnCodec's Codec.encode
    assert _same_codes(fc.encode(torch.from_numpy(x)[None], fc.sample_rate, n_q), own)


@pytest.mark.parametrize("family", ["mimi", "dac", "snac"])
def test_items_equal_alone(sources, family):
    fc = load_family_model(sources[family][0][1])
    sr = fc.sample_rate
    items = [_signal(int(0.5 * sr) + 11, sr, 1), _signal(int(0.9 * sr) + 3, sr, 2)]
    together = fc.encode_items(items, sr)
    assert len(together) == 2
    for x, codes in zip(items, together, strict=True):
        assert _same_codes(codes, fc.encode(x, sr))


@pytest.mark.parametrize("family,rate", [("mimi", 16000), ("dac", 24000), ("snac", 44100)])
def test_resampling_equals_resample_then_encode(sources, family, rate):
    """A signal at another rate: the codes of the signal resampled first (rvqkit.audio.resample)."""
    path = sources[family][0][1]
    fc = load_family_model(path)
    model, _ = LOADERS[family](path)
    x = _signal(int(0.8 * rate) + 5, rate, 3)
    assert rate != fc.sample_rate
    own = _own_encode(family, model, resample(x[None], rate, fc.sample_rate)[0], None)
    assert _same_codes(fc.encode(x, rate), own)


@pytest.mark.parametrize("family", ["mimi", "dac", "snac"])
def test_bad_audio(sources, family):
    fc = load_family_model(sources[family][0][1])
    sr = fc.sample_rate
    x = _signal(sr // 2, sr)
    nan = x.copy()
    nan[100] = np.nan
    with pytest.raises(AudioError, match="NaN|finite"):
        fc.encode(nan, sr)
    with pytest.raises(AudioError, match="empty"):
        fc.encode(np.zeros(0, np.float32), sr)
    with pytest.raises(AudioError, match="channels"):
        fc.encode(np.stack([x, x], axis=1), sr)  # [samples, channels]: transposed
    with pytest.raises(AudioError, match="sample_rate"):
        fc.encode(x, 0)
    with pytest.raises(RvqkitError, match="n_q"):
        fc.encode(x, sr, n_q=fc.num_codebooks + 1)
    with pytest.raises(AudioError, match="one item"):
        fc.encode([x, x], sr)
    with pytest.raises(RvqkitError):
        fc.decode(torch.zeros(3, 4, 5, dtype=torch.long))
    with pytest.raises(AudioError, match="length"):
        fc.decode(fc.encode(x, sr), length=-1)


@pytest.mark.parametrize("family,index", CASES)
def test_codec_from_pretrained_names_the_family(sources, family, index):
    _, path = sources[family][index]
    names = {"mimi": "Mimi", "dac": "DAC", "snac": "SNAC"}
    with pytest.raises(WeightsError, match=rf"is a {names[family]} model.*load_family_model"):
        Codec.from_pretrained(path)


def test_weight_files_inside_folders(sources):
    """A folder's config.json or weights file names the same family as the folder."""
    for family, name in (
        ("mimi", "model.safetensors"),
        ("dac", "config.json"),
        ("snac", "pytorch_model.bin"),
    ):
        folder = next(p for _, p in sources[family] if p.is_dir())
        assert detect_family(folder / name) == family
        assert detect_family(folder / "config.json") == family


def test_unknown_sources(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    (other / "model.safetensors").write_bytes(b"\0" * 16)
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(300))
    for p in (other, empty, junk, tmp_path / "missing.th"):
        assert family_of(p) is None
        with pytest.raises(WeightsError, match="cannot tell the codec family.*looked for"):
            detect_family(p)
        with pytest.raises(WeightsError):
            load_family_model(p)


def test_known_ids_need_no_network():
    for name, family in (
        ("kyutai/mimi", "mimi"),
        ("descript/dac_44khz", "dac"),
        ("descript/dac_16khz", "dac"),
        ("hubertsiuzdak/snac_32khz", "snac"),
        ("facebook/encodec_24khz", "encodec"),
        ("encodec_48khz", "encodec"),
        ("random-24khz", "encodec"),
    ):
        assert detect_family(name) == family == KNOWN_IDS[name]


def test_encodec_sources_stay_encodec(meta_24k, hf_24k, tmp_path):
    assert detect_family(meta_24k[1]) == "encodec"
    renamed = tmp_path / "checkpoint.th"  # not Meta's published name: the pickle index says EnCodec
    renamed.symlink_to(meta_24k[1])
    assert detect_family(renamed) == "encodec"
    (tmp_path / META_CHECKPOINTS["encodec_24khz"]).symlink_to(meta_24k[1])
    assert detect_family(tmp_path) == "encodec"  # a folder holding Meta's checkpoint, as load_weights
    assert detect_family(hf_24k[1]) == "encodec"
    assert detect_family(hf_24k[1] / "config.json") == "encodec"
    codec = Codec.from_pretrained(hf_24k[1])
    assert codec.sample_rate == 24000
    with pytest.raises(WeightsError, match="EnCodec model.*Codec.from_pretrained"):
        load_family_model(hf_24k[1])


def test_other_hub_ids_read_the_downloaded_config(sources, monkeypatch):
    """A hub id of another name: the family of the folder download_from_hub gives (the cache, here)."""
    import rvqkit.families as families

    fetched = []
    folder = sources["dac"][1][1]

    def fake_download(repo_id, revision=None):
        fetched.append((repo_id, revision))
        return folder

    monkeypatch.setattr(families, "download_from_hub", fake_download)
    assert detect_family("someone/my-dac", revision="v1") == "dac"
    assert fetched == [("someone/my-dac", "v1")]
    with pytest.raises(WeightsError, match="someone/my-dac is a DAC model"):
        Codec.from_pretrained("someone/my-dac")
    fc = load_family_model("someone/my-dac")
    assert fc.family == "dac" and fc.source == "someone/my-dac"
    assert family_of("not a hub id") is None  # neither a path nor a hub id: nothing is fetched
    assert len(fetched) == 3  # detect, from_pretrained's check, load_family_model (once)
