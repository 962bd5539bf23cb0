"""rvqkit sets the float precision around its own model calls and restores the user's settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_signal

from rvqkit.errors import RvqkitError
from rvqkit.precision import _tf32_flags, check_precision, precision_scope


def _flags() -> list:
    return [getattr(obj, name) for obj, name, _, _ in _tf32_flags()]


@pytest.fixture
def user_tf32():
    """The user has turned TF32 on everywhere (as torch does for cuDNN convolutions by default)."""
    flags = _tf32_flags()
    before = _flags()
    for obj, name, _, tf32 in flags:
        setattr(obj, name, tf32)
    yield [tf32 for _, _, _, tf32 in flags]
    for (obj, name, _, _), v in zip(flags, before, strict=True):
        setattr(obj, name, v)


def test_model_calls_run_exact_fp32_and_restore_the_users_setting(codec24, user_tf32, monkeypatch):
    seen = []
    step = codec24.model.quantizer.encode

    def spy(*args, **kwargs):
        seen.append(_flags())
        return step(*args, **kwargs)

    monkeypatch.setattr(codec24.model.quantizer, "encode", spy)
    x = make_signal(24000, 1, 24000)
    codec24.encode(x, 24000, bandwidth=6.0)
    exact = [e for _, _, e, _ in _tf32_flags()]
    assert seen and all(s == exact for s in seen)
    assert _flags() == user_tf32


def test_tf32_mode_and_restore_after_an_error(user_tf32):
    for obj, name, exact, _ in _tf32_flags():
        setattr(obj, name, exact)
    with pytest.raises(ValueError), precision_scope("tf32", torch.device("cpu")):
        assert _flags() == user_tf32
        raise ValueError
    assert _flags() == [e for _, _, e, _ in _tf32_flags()]


def test_bf16_runs_and_keeps_shapes(codec24):
    x = make_signal(24000, 1, 24000)
    exact = codec24.encode(x, 24000, bandwidth=6.0)
    codec24.precision = "bf16"
    try:
        low = codec24.encode(x, 24000, bandwidth=6.0)
        audio = codec24.decode(low)
    finally:
        codec24.precision = "fp32"
    assert low.codes.shape == exact.codes.shape
    assert audio.dtype == torch.float32 and np.isfinite(audio.numpy()).all()
    assert torch.equal(codec24.encode(x, 24000, bandwidth=6.0).codes, exact.codes)  # fp32 again


@pytest.mark.parametrize("bad", ["fp16", "FP32", None, 32])
def test_unknown_precision_is_refused(bad):
    with pytest.raises(RvqkitError, match="precision"):
        check_precision(bad)
