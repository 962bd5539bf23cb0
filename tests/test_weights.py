"""Loading weights: Meta .th (checksum), Hugging Face folders (safetensors and .bin), the hub client
with a pre-filled cache in offline mode, and clear errors for bad weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import make_signal
from safetensors.torch import load_file, save_file

from rvqkit import Codec, WeightsError
from rvqkit.weights import load_weights


def _encode(codec: Codec):
    return codec.encode(make_signal(5000, codec.channels, codec.sample_rate), codec.sample_rate, 6.0).codes


def test_meta_checksum_is_checked(meta_24k, tmp_path):
    _, path = meta_24k
    bad = tmp_path / "encodec_24khz-00000000.th"
    shutil.copy(path, bad)
    with pytest.raises(WeightsError, match="checksum mismatch"):
        Codec.from_pretrained(bad)


def test_meta_folder_and_renamed_file(meta_24k, tmp_path):
    _, path = meta_24k
    ref = _encode(Codec.from_pretrained(path))
    renamed = tmp_path / "my_model.th"  # no checksum in the name: architecture inferred from the tensors
    shutil.copy(path, renamed)
    assert torch.equal(_encode(Codec.from_pretrained(renamed)), ref)
    folder = tmp_path / "meta"
    folder.mkdir()
    shutil.copy(path, folder / "encodec_24khz-d7cc33bc.th")  # real name, wrong hash for these weights
    with pytest.raises(WeightsError, match="checksum"):
        Codec.from_pretrained(folder)


def test_hf_bin_equals_safetensors(hf_24k, tmp_path):
    _, folder = hf_24k
    ref = _encode(Codec.from_pretrained(folder))
    other = tmp_path / "bin"
    other.mkdir()
    shutil.copy(folder / "config.json", other / "config.json")
    torch.save(load_file(folder / "model.safetensors"), other / "pytorch_model.bin")
    assert torch.equal(_encode(Codec.from_pretrained(other)), ref)
    assert torch.equal(_encode(Codec.from_pretrained(other / "config.json")), ref)


def test_old_style_weight_norm_keys(hf_24k, tmp_path):
    """The hub's published safetensors use weight_g / weight_v; newer transformers saves parametrizations."""
    _, folder = hf_24k
    sd = load_file(folder / "model.safetensors")
    old = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in sd.items()
    }
    assert any(k.endswith("weight_g") for k in old)
    other = tmp_path / "old"
    other.mkdir()
    shutil.copy(folder / "config.json", other / "config.json")
    save_file(old, other / "model.safetensors")
    assert torch.equal(_encode(Codec.from_pretrained(other)), _encode(Codec.from_pretrained(folder)))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda sd: sd.pop("decoder.layers.1.lstm.weight_hh_l0"),
            "missing tensor in weights: decoder.layers.1.lstm",
        ),
        (
            lambda sd: sd.__setitem__("encoder.layers.99.conv.bias", torch.zeros(3)),
            "unknown tensor.*layers.99",
        ),
        (
            lambda sd: sd.__setitem__("decoder.layers.1.lstm.bias_ih_l0", torch.zeros(7)),
            "decoder.layers.1.lstm.bias_ih_l0 has shape",
        ),
        (lambda sd: sd.pop("quantizer.layers.5.codebook.embed"), "quantizer layer 5"),
    ],
)
def test_bad_tensors_are_named(hf_24k, tmp_path, mutate, message):
    _, folder = hf_24k
    sd = dict(load_file(folder / "model.safetensors"))
    mutate(sd)
    other = tmp_path / "bad"
    other.mkdir()
    shutil.copy(folder / "config.json", other / "config.json")
    save_file(sd, other / "model.safetensors")
    with pytest.raises(WeightsError, match=message):
        load_weights(other) and Codec.from_pretrained(other)


def test_unreadable_and_missing(tmp_path):
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights"):
        Codec.from_pretrained(junk)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="neither"):
        Codec.from_pretrained(tmp_path / "empty")
    with pytest.raises(WeightsError, match="no such file"):
        Codec.from_pretrained(str(tmp_path / "nothing" / "here.th"))
    cfg_only = tmp_path / "cfg"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text(json.dumps({"model_type": "encodec"}))
    with pytest.raises(WeightsError, match="no model.safetensors"):
        Codec.from_pretrained(cfg_only)


def test_hub_id_through_offline_cache(hf_24k, tmp_path, monkeypatch):
    """A pre-filled huggingface_hub cache, used with HF_HUB_OFFLINE=1, as a user's second run would."""
    _, folder = hf_24k
    cache = tmp_path / "hub"
    repo = cache / "models--facebook--encodec_24khz"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, snap / name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    codec = Codec.from_pretrained("facebook/encodec_24khz")
    assert torch.equal(_encode(codec), _encode(Codec.from_pretrained(folder)))
    assert torch.equal(_encode(Codec.from_pretrained("encodec_24khz")), _encode(codec))
    with pytest.raises(WeightsError, match="not in the Hugging Face cache"):
        Codec.from_pretrained("facebook/encodec_48khz")


def _load_with_endpoint(tmp_path, endpoint: str, model: str) -> tuple[str, float]:
    """In a fresh process with an empty cache and HF_ENDPOINT set: (the WeightsError's text, seconds taken)."""
    import os
    import subprocess
    import sys

    code = f"""
import time
from rvqkit import Codec, WeightsError
start = time.perf_counter()
try:
    Codec.from_pretrained({model!r})
except WeightsError as e:
    print(f"{{time.perf_counter() - start:.3f}} {{e}}")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(tmp_path / "empty-cache"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout, out.stderr
    seconds, message = out.stdout.strip().split(" ", 1)
    return message, float(seconds)


def test_unreachable_hub_fails_fast_with_directions(tmp_path):
    """Port 9 on loopback (discard; closed here): no retries, one error that says how to get the weights."""
    msg, seconds = _load_with_endpoint(tmp_path, "http://127.0.0.1:9", "facebook/encodec_24khz")
    assert seconds < 2.0, seconds  # huggingface_hub's own retries take about 25 s
    assert "cannot be reached" in msg and "127.0.0.1:9" in msg and "Connect" in msg, msg
    assert "huggingface-cli download facebook/encodec_24khz" in msg
    assert "encodec_24khz-d7cc33bc.th" in msg and "HF_HUB_OFFLINE=1" in msg
    assert str(tmp_path / "empty-cache") in msg and "random-24khz" in msg


def test_silent_hub_times_out_quickly(tmp_path):
    """A server that accepts the connection and never answers (a hung proxy): the short probe gives up."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # connections wait in the backlog; nothing is ever sent back
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        msg, seconds = _load_with_endpoint(tmp_path, endpoint, "facebook/encodec_48khz")
    assert "cannot be reached" in msg and "HF_HUB_ETAG_TIMEOUT" in msg and "random-48khz" in msg, msg
    assert seconds < 4.0, seconds  # the probe waits 1.5 s; generous for a busy machine


def test_random_models_are_seeded_labelled_and_usable():
    from rvqkit.weights import RANDOM_MODELS, is_random_model, random_weights

    assert is_random_model("random-24khz") and not is_random_model("facebook/encodec_24khz")
    a = Codec.from_pretrained("random-24khz")
    b = Codec.from_pretrained("random-24khz")
    assert a.name == "encodec_24khz" and a.weights_sha256 == b.weights_sha256
    assert all(torch.equal(a.model.state_dict()[k], v) for k, v in b.model.state_dict().items())
    other_seed = random_weights("random-24khz", seed=1)
    assert other_seed.sha256 != a.weights_sha256
    assert not torch.equal(other_seed.state_dict["quantizer.codebooks"], a.model.quantizer.codebooks)
    x = make_signal(24000, 1, 24000)
    enc = a.encode(x, 24000, 6.0)
    assert enc.weights_sha256 == a.weights_sha256
    assert len(torch.unique(enc.codes[0, 0])) > 4  # codebooks fitted to the encoder: many codes in use
    y = a.decode(enc)
    assert y.shape == (1, 1, 24000) and torch.isfinite(y).all() and 0 < float(y.abs().max()) < 2
    c48 = Codec.from_pretrained("random-48khz")
    assert c48.name == "encodec_48khz" and c48.channels == 2 and c48.weights_sha256 != a.weights_sha256
    assert set(RANDOM_MODELS) == {"random-24khz", "random-48khz"}
    with pytest.raises(WeightsError, match="unknown random model"):
        random_weights("random-16khz")
