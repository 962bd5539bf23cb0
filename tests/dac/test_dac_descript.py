"""DAC parity against descript's own package (``descript-audio-codec`` 1.0.0), where it can be imported.

It cannot be installed beside rvqkit's test dependencies: ``descript-audiotools`` 0.7.2 (its dependency,
the latest on PyPI) pins ``protobuf<3.20`` and imports ``torchaudio`` at import time, and torchaudio
does not load with torch 2.13. docs/dac.md gives the throwaway venv these tests were run in (the
package installed ``--no-deps``, torchaudio replaced by ``tests/stubs``); elsewhere they skip.

Checked here: descript's ``DAC.load`` reads rvqkit's ``.pth`` (its real loader, weight norm recomputed
every forward); codes equal to rvqkit's (descript's distance, rvqkit's default), audio within 1e-4; and
``DAC.compress``'s chunked codes equal :func:`rvqkit.dac.encode_like_dac_compress`'s.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from rvqkit.dac import encode_like_dac_compress, load_dac, random_dac, save_dac_pth
from rvqkit.dac.config import DAC_44KHZ_16KBPS

# (tests/dac, this folder, is a namespace package "dac" on the test path: only a real package counts)
_spec = importlib.util.find_spec("dac")
if _spec is None or _spec.origin is None:
    pytest.skip(
        "descript-audio-codec is not installed: descript-audiotools 0.7.2 pins protobuf<3.20 and imports "
        "torchaudio (which does not load with torch 2.13); see docs/dac.md for the venv these tests run in",
        allow_module_level=True,
    )
try:
    import torchaudio  # noqa: F401
except Exception:  # audiotools imports it at import time; the stand-in in tests/stubs serves
    sys.modules.pop("torchaudio", None)
    sys.path.insert(0, str(Path(__file__).parents[1] / "stubs"))
import dac  # noqa: E402
from audiotools import AudioSignal  # noqa: E402
from test_dac_parity import SMALL_16K, SMALL_44K, signal  # noqa: E402

pytestmark = pytest.mark.arith


def _models(cfg, tmp: Path, seed: int):
    pth = save_dac_pth(random_dac(cfg, seed), tmp / "weights.pth")
    ref = dac.DAC.load(str(pth)).eval()
    ours, _ = load_dac(pth)
    return ours, ref


@pytest.fixture(scope="module", params=[SMALL_16K, SMALL_44K], ids=lambda c: c.name)
def models(request, tmp_path_factory):
    return _models(request.param, tmp_path_factory.mktemp("descript"), seed=3)


def _check_codes_and_audio(ours, ref, x: torch.Tensor) -> None:
    sr = ours.sampling_rate
    with torch.no_grad():
        _, ref_codes, _, _, _ = ref.encode(ref.preprocess(x, sr), None)
        codes = ours.encode(x)
        assert codes.unique().numel() > 20
        assert torch.equal(codes, ref_codes), f"{(codes != ref_codes).sum().item()} codes differ"
        ref_audio = ref.decode(ref.quantizer.from_codes(codes)[0])
        audio = ours.decode(codes)
    assert audio.shape == ref_audio.shape
    assert (audio - ref_audio).abs().max().item() <= 1e-4


@pytest.mark.parametrize(("kind", "seconds", "extra"), [("noise", 1, 3), ("sine", 1, 200), ("chirp", 2, 77)])
def test_codes_and_audio_equal_descript(models, kind, seconds, extra):
    ours, ref = models
    _check_codes_and_audio(ours, ref, signal(kind, seconds * ours.sampling_rate + extra, ours.sampling_rate))


@pytest.mark.parametrize("win_duration", [1.0, 1.5])
def test_chunked_compress_codes_equal_descript(models, win_duration, monkeypatch):
    """descript's ``compress`` chunking (padding off, delay padding, windows), without its loudness
    normalization (``normalize_db=None``; the signal's peak is below 1, so ``ensure_max_of_audio`` keeps it).
    The loudness ``compress`` measures only for its file's metadata needs torchaudio's ``lfilter``, which
    the stand-in lacks: it is replaced by a constant (no effect on codes with ``normalize_db=None``)."""
    monkeypatch.setattr(AudioSignal, "loudness", lambda self, *a, **k: torch.zeros(self.batch_size))
    ours, ref = models
    sr = ours.sampling_rate
    x = signal("chirp", int(3.3 * sr), sr, seed=5)
    with torch.no_grad():
        ref_codes = ref.compress(
            AudioSignal(x.clone(), sr), win_duration=win_duration, normalize_db=None
        ).codes
    codes = encode_like_dac_compress(ours, x, win_duration=win_duration)
    assert codes.shape == ref_codes.shape
    assert torch.equal(codes, ref_codes)


def test_full_size_44khz_16kbps(tmp_path):
    """The 44.1 kHz 16 kbps model (latent 128, 18 codebooks): only descript has it (transformers'
    DacConfig cannot express its latent size)."""
    ours, ref = _models(DAC_44KHZ_16KBPS, tmp_path, seed=0)
    _check_codes_and_audio(ours, ref, signal("chirp", 44100 + 1234, 44100, seed=2))
