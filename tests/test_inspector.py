"""``rvqkit inspect``: the report's numbers agree with the Codec API, the PNGs are real images, the
log-mel spectrogram is right, and coarse decoding is decoding a prefix of the codebooks."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_signal

from rvqkit import BandwidthError, Codec
from rvqkit.inspector import inspect_audio, log_mel, mel_filterbank, stft_size

PIL = pytest.importorskip("PIL.Image", reason="Pillow (a matplotlib dependency) reads the PNGs back")
pytest.importorskip("matplotlib", reason="the plots need matplotlib (rvqkit[plot])")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rvqkit", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("inspect") / "speech.wav"
    sf.write(path, make_signal(24000, 1, 16000, seed=3).T, 16000, subtype="PCM_16")  # 1.5 s, 16 kHz
    return path


@pytest.fixture(scope="module")
def codec(hf_24k):
    return Codec.from_pretrained(hf_24k[1])


def entropy_bits(codes: np.ndarray) -> float:
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def test_cli_report_and_plots_agree_with_api(hf_24k, codec, wav, tmp_path):
    out = tmp_path / "report"
    res = run("inspect", wav, "--model", hf_24k[1], "--bandwidth", "3", "--out", out)
    assert res.returncode == 0, res.stderr
    assert "Quantizer layers" in res.stdout and "perplexity" in res.stdout

    report = json.loads((out / "report.json").read_text())
    assert report["plots"] == ["waveforms.png", "spectrograms.png", "residual_norm.png", "codes.png"]
    for name in report["plots"]:
        with PIL.open(out / name) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
            pixels = np.asarray(im.convert("L"), dtype=float)
        assert pixels.std() > 5, f"{name} looks blank"
    md = (out / "report.md").read_text()
    assert "| layer | indices |" in md and "![codes.png](codes.png)" in md

    # the same walk through the public API
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    enc = codec.encode(x.T, sr, bandwidth=3)
    assert report["input"] == {"shape": [1, 24000], "sample_rate": 16000, "samples": 24000, "duration_s": 1.5}
    assert report["model_input"]["shape"] == [1, 1, int(enc.lengths[0])]
    assert (report["n_q"], report["frames"], report["bandwidth_kbps"]) == (4, int(enc.frame_lengths[0]), 3.0)
    model_x = codec.prepare(x.T, sr)[0]
    emb, _ = codec.embed(model_x, codec.sample_rate)
    assert report["embedding"]["shape"] == list(emb.shape) == [1, 128, int(enc.frame_lengths[0])]
    assert math.isclose(report["embedding"]["mean"], float(emb.double().mean()), rel_tol=1e-6, abs_tol=1e-9)
    assert math.isclose(report["embedding"]["std"], float(emb.double().std()), rel_tol=1e-6)
    steps = codec.quantize(emb, 4)
    assert torch.equal(torch.stack([s.indices for s in steps], 1), enc.codes)
    for k, layer in enumerate(report["layers"]):
        codes_k = enc.codes[0, k].numpy()
        assert layer["indices_shape"] == [1, enc.codes.shape[-1]]
        assert layer["distinct_codes"] == len(np.unique(codes_k))
        assert math.isclose(layer["perplexity"], 2 ** entropy_bits(codes_k), rel_tol=1e-9)
        norm = float(steps[k].residual.double().norm(dim=1).mean())
        assert math.isclose(layer["residual_norm"], norm, rel_tol=1e-6)
    assert [r["n_q"] for r in report["reconstructions"]] == [1, 2, 4]
    for row in report["reconstructions"]:
        y = codec.decode(enc, n_q=row["n_q"])[0]
        snr = 10 * math.log10(float(model_x.double().pow(2).sum() / (model_x - y).double().pow(2).sum()))
        assert math.isclose(row["snr_db"], snr, rel_tol=1e-5, abs_tol=1e-6)

    # an existing report is not replaced without --overwrite (checked before any work)
    again = run("inspect", wav, "--model", hf_24k[1], "--out", out, "--no-plots")
    assert again.returncode == 1 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_inspect_errors_are_one_line(hf_24k, wav):
    res = run("inspect", wav, "--model", hf_24k[1], "--k", "0,5")
    assert res.returncode == 1 and "must be in [1, 8]" in res.stderr and "Traceback" not in res.stderr
    res = run("inspect", wav, "--model", hf_24k[1], "--bandwidth", "5")
    assert res.returncode == 1 and "valid bandwidths" in res.stderr


@pytest.mark.parametrize("bandwidth", [1.5, 6.0])
def test_coarse_decoding_is_a_prefix_of_the_codebooks(codec, bandwidth):
    """decode(n_q=k) for every k the encoding holds equals decoding the first k codebooks alone."""
    enc = codec.encode(make_signal(5000, 1, 24000, seed=5), 24000, bandwidth=bandwidth)
    outs = []
    for k in range(1, enc.n_q + 1):
        y = codec.decode(enc, n_q=k)
        direct = codec.synthesize(codec.dequantize(enc.codes[:, :k]))[..., :5000]
        torch.testing.assert_close(y, direct)
        outs.append(y)
    assert not torch.equal(outs[0], outs[-1])
    for bad in (0, enc.n_q + 1):
        with pytest.raises(BandwidthError, match=f"between 1 and {enc.n_q}"):
            codec.decode(enc, n_q=bad)


def test_inspect_api_on_stereo_48k(hf_48k):
    """48 kHz: segments' embeddings are concatenated; the walk's codes are encode's codes."""
    codec = Codec.from_pretrained(hf_48k[1])
    x = make_signal(60000, 2, 48000, seed=7)  # 1.25 s: two segments
    insp = inspect_audio(codec, x, 48000, bandwidth=6.0, ks=[1, 4])
    enc = codec.encode(x, 48000, bandwidth=6.0)
    assert torch.equal(insp.encoded.codes, enc.codes)
    assert insp.report["embedding"]["shape"] == [1, 128, int(enc.frame_lengths[0])]
    assert [layer["distinct_codes"] for layer in insp.report["layers"]] == [
        len(torch.unique(enc.codes[0, k])) for k in range(4)
    ]
    assert insp.reconstructions[4].shape == (2, 60000)
    torch.testing.assert_close(insp.reconstructions[1], codec.decode(enc, n_q=1)[0])


def test_mel_filterbank_and_log_mel():
    sr = 24000
    n_fft = stft_size(sr)
    fb = mel_filterbank(sr, n_fft, 80)
    assert n_fft == 1024 and fb.shape == (80, 513) and fb.min() >= 0
    assert (fb.max(axis=1) > 0.5).all()  # every band gets FFT bins (narrow low bands peak below 1)
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > peaks[0]
    # a 1 kHz tone is loudest in the band whose triangle covers 1 kHz best
    t = np.arange(sr) / sr
    mel = log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32), sr)
    assert mel.shape[0] == 80
    loudest = int(mel[:, 10:-10].mean(dim=1).argmax())
    assert loudest == int(fb[:, round(1000 * n_fft / sr)].argmax())


def test_core_imports_do_not_need_matplotlib():
    code = (
        "import sys, rvqkit, rvqkit.inspector, rvqkit.plots, rvqkit.tokens, rvqkit.cli; "
        "rvqkit.cli.load_commands(); print('matplotlib' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
