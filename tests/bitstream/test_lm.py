"""The entropy-coding LM: probabilities identical to Meta's ``LMModel`` (past the attention window too),
explicit state, checked checkpoints. (Moved from test_ecdc.py, assertions unchanged.)"""

from __future__ import annotations

import pytest
import torch
from ecdc_helpers import build_meta_lm

import rvqkit
from rvqkit.errors import WeightsError
from rvqkit.lm import EntropyLM, LMConfig, find_lm, load_lm, torch_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread, as test_ecdc.py: the LM's rounding depends on the thread count."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def lms(meta_encodec, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lms")
    return {w: build_meta_lm(meta_encodec, w, 11 + i, folder) for i, w in enumerate(("24", "48"))}


def _compare_lm_steps(meta_lm, ours, k: int, steps: int) -> None:
    codes = torch.randint(0, 1024, (k, steps), generator=torch.Generator().manual_seed(0))
    state, prev, m_state, m_off = ours.initial_state(), None, None, 0
    m_in = torch.zeros(1, k, 1, dtype=torch.long)
    for t in range(steps):
        with torch.no_grad():
            m_probs, m_state, m_off = meta_lm(m_in, m_state, m_off)
        probs, state = ours.step(prev, state, k)
        assert torch.equal(probs, m_probs[0, :, :, 0].t()), t
        prev, m_in = codes[:, t], 1 + codes[None, :, t : t + 1]


@pytest.mark.parametrize("which", ["24", "48"])
def test_lm_probabilities_identical_to_meta(lms, which):
    meta_lm, path = lms[which]
    ours = load_lm(path)
    assert ours.config == LMConfig.for_codec(rvqkit.config.PRESETS[f"encodec_{which}khz"])
    _compare_lm_steps(meta_lm, ours, k=4, steps=12)


def test_lm_attention_window_identical_to_meta(meta_encodec):
    """Past the attention window (a short one here: the published 262/525 steps take long)."""
    from encodec.model import LMModel

    torch.manual_seed(3)
    meta_lm = LMModel(4, 1024, num_layers=2, dim=200, past_context=6).eval()
    ours = EntropyLM(LMConfig(n_q=4, num_layers=2, past_context=6)).eval()
    ours.load_state_dict(meta_lm.state_dict())
    _compare_lm_steps(meta_lm, ours, k=3, steps=15)


def test_lm_checkpoint_is_checked(lms, tmp_path):
    path = lms["24"][1]
    bad = tmp_path / path.name
    data = path.read_bytes()
    bad.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_lm(bad)
    renamed = tmp_path / "lm.th"
    renamed.write_bytes(path.read_bytes())
    assert load_lm(renamed).config.n_q == 32
    with pytest.raises(WeightsError, match="unknown tensor|shape"):
        load_lm(renamed, "encodec_48khz")
    pickled = tmp_path / "evil.th"
    torch.save({"x": object()}, pickled)
    with pytest.raises(WeightsError, match="cannot read LM weights"):
        load_lm(pickled)
    assert find_lm("encodec_24khz", near=path) == path


def test_entropy_lm_state_is_explicit():
    lm = EntropyLM(LMConfig(n_q=2, num_layers=1, past_context=3)).eval()
    s0 = lm.initial_state()
    p1, s1 = lm.step(None, s0, 2)
    p1_again, _ = lm.step(None, s0, 2)
    assert torch.equal(p1, p1_again) and s0.offset == 0 and s1.offset == 1
    assert p1.shape == (2, 1024) and torch.allclose(p1.sum(-1), torch.ones(2))
    s = s1
    for t in range(6):
        _, s = lm.step(torch.tensor([t, t]), s, 2)
    assert s.past[0].shape[1] == 3  # the window keeps past_context steps


def test_entropy_lm_is_a_predictor_for_its_model():
    """What the bitstream asks of it: the model it fits, and the hint for a stream that does not decode."""
    from rvqkit.config import PRESETS

    lm = EntropyLM(LMConfig.for_codec(PRESETS["encodec_24khz"]))
    lm.check_codec(PRESETS["encodec_24khz"])
    with pytest.raises(ValueError, match="another model .*encodec_48khz needs 16 codebooks, context 525"):
        lm.check_codec(PRESETS["encodec_48khz"])
    with torch_threads(1):
        assert "ran here on 1 threads" in lm.decode_hint()
