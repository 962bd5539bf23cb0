"""The float precision of rvqkit's own model calls, set around each call and restored after it.

torch enables TF32 for cuDNN convolutions by default; on an NVIDIA H200 that alone moved 2 % of EnCodec's
codes away from the references. rvqkit therefore never inherits the process-wide setting: every model
call runs under :func:`precision_scope`, which sets the precision it was asked for and puts the user's
settings back afterwards (the user's global choice is never changed for their own code).

Modes:
    ``"fp32"`` (default): exact float32, TF32 off for cuDNN convolutions and RNNs and for CUDA matrix
        products. On CPU this is what torch does anyway.
    ``"tf32"``: TF32 on for cuDNN and CUDA matrix products (NVIDIA Ampere or later; no effect on CPU).
        Faster on GPU; some codes move (see docs/performance.md).
    ``"bf16"``: autocast to bfloat16 on the model's device. Faster on GPU; many codes move.

The flags are process-wide, so two threads that run models with *different* modes at the same moment
see each other's setting; threads that use one mode (the default everywhere) are unaffected.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Literal, TypeVar, get_args

import torch

from .errors import RvqkitError

Precision = Literal["fp32", "tf32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
F = TypeVar("F", bound=Callable[..., Any])


def check_precision(precision: object) -> Precision:
    """``precision`` if it is one of :data:`PRECISIONS`, else a :class:`RvqkitError` naming it."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise RvqkitError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision  # type: ignore[return-value]  # checked against the Literal's values above


def _tf32_flags() -> list[tuple[Any, str, Any, Any]]:
    """(object, attribute, value for exact fp32, value for tf32) of each TF32 switch this torch has.

    torch 2.9 added ``fp32_precision`` ("ieee" / "tf32"); it warns when the older ``allow_tf32`` flags
    are mixed with it, so the newer switches are used where they exist."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision") and hasattr(matmul, "fp32_precision"):
        return [
            (cudnn.conv, "fp32_precision", "ieee", "tf32"),  # type: ignore[attr-defined]  # torch >= 2.9
            (cudnn.rnn, "fp32_precision", "ieee", "tf32"),
            (matmul, "fp32_precision", "ieee", "tf32"),
        ]
    return [(cudnn, "allow_tf32", False, True), (matmul, "allow_tf32", False, True)]


@contextmanager
def precision_scope(precision: Precision, device: torch.device) -> Iterator[None]:
    """Run the body with ``precision`` (see the module docstring) on ``device``, then restore."""
    flags = _tf32_flags()
    saved = [getattr(obj, name) for obj, name, _, _ in flags]
    try:
        for obj, name, exact, tf32 in flags:
            setattr(obj, name, tf32 if precision == "tf32" else exact)
        with ExitStack() as stack:
            if precision == "bf16":
                stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
            yield
    finally:
        for (obj, name, _, _), value in zip(flags, saved, strict=True):
            setattr(obj, name, value)


def _float32(obj: Any) -> Any:
    """Autocast's bfloat16 outputs (tensors, and tuples or lists of them) back to float32 for the user."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_float32(o) for o in obj)
    return obj


def model_call(fn: F) -> F:
    """Decorate a method of a :class:`~rvqkit.Codec` (or of an object with a ``codec`` attribute): run it
    under ``torch.inference_mode`` and the codec's :func:`precision_scope`. With ``"bf16"``, float
    tensors it returns are float32 again."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        codec = getattr(self, "codec", self)
        with torch.inference_mode(), precision_scope(codec.precision, codec.device):
            out = fn(self, *args, **kwargs)
        return _float32(out) if codec.precision == "bf16" else out

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature
