"""The models a corpus job can run: EnCodec (:class:`~rvqkit.Codec`) and the Mimi, DAC and SNAC models
(:class:`~rvqkit.family_codec.FamilyCodec`, from :func:`rvqkit.families.load_family_model`).

The two kinds pick codebooks differently: EnCodec by ``bandwidth`` (kbps, one of its target
bandwidths), the families by ``n_q`` (codebooks; SNAC: levels, coarsest first), where a ``bandwidth``
is accepted only if it is exactly one of the model's (:func:`rvqkit.family_codes.n_q_for_bandwidth`).
Errors name the parameters (``n_q=``, ``bandwidth=``).
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any, TypeGuard, Union

import torch

from ..codec import Codec
from ..errors import BandwidthError
from .items import CorpusError

if TYPE_CHECKING:
    from ..family_codec import FamilyCodec

#: A model a corpus job encodes with.
CorpusModel = Union[Codec, "FamilyCodec"]
#: EnCodec's bandwidth (kbps) when none is given.
DEFAULT_BANDWIDTH = 6.0


def is_family(codec: Any) -> TypeGuard[FamilyCodec]:
    """Whether ``codec`` is a Mimi, DAC or SNAC model (a :class:`~rvqkit.family_codec.FamilyCodec`)."""
    from ..family_codec import FamilyCodec

    return isinstance(codec, FamilyCodec)


def family_name(codec: Any) -> str:
    """``"encodec"``, ``"mimi"``, ``"dac"`` or ``"snac"``."""
    return str(codec.family) if is_family(codec) else "encodec"


def load_model(model: str | os.PathLike[str] | Any, device: str = "cpu") -> CorpusModel:
    """``model`` itself if already loaded; else a Mimi, DAC or SNAC source (by
    :func:`rvqkit.families.family_of`) through :func:`~rvqkit.families.load_family_model`, and anything
    else through :meth:`rvqkit.Codec.from_pretrained`."""
    if isinstance(model, Codec) or is_family(model):
        return model
    from ..families import family_of, load_family_model

    if family_of(model) in ("mimi", "dac", "snac"):
        return load_family_model(model, device=device)
    return Codec.from_pretrained(model, device=device)


def resolve_n_q(codec: CorpusModel, bandwidth: float | None, n_q: int | None) -> tuple[int, float]:
    """``(n_q, bandwidth in kbps)`` of a job: codebooks (SNAC: levels) and the kbps they carry.

    EnCodec takes ``bandwidth`` (default :data:`DEFAULT_BANDWIDTH`) and refuses ``n_q``. The families take
    ``n_q`` (default: all codebooks); a ``bandwidth`` must be one of the model's exactly (and give the
    same count as ``n_q`` if both are given)."""
    if not is_family(codec):
        assert isinstance(codec, Codec)
        if n_q is not None:
            raise CorpusError(
                f"n_q=K is for Mimi, DAC and SNAC models; {codec.name} (EnCodec) takes bandwidth=KBPS "
                f"(one of {', '.join(f'{b:g}' for b in codec.bandwidths)})"
            )
        count = codec.n_q_for(DEFAULT_BANDWIDTH if bandwidth is None else bandwidth)
        return count, float(codec.config.bandwidth_for_n_q(count))
    return _family_n_q(codec, bandwidth, n_q)


def _family_n_q(codec: FamilyCodec, bandwidth: float | None, n_q: int | None) -> tuple[int, float]:
    from ..family_codes import family_bandwidths, format_kbps, n_q_for_bandwidth

    total = int(codec.num_codebooks)
    what = "levels" if codec.family == "snac" else "codebooks"
    if n_q is not None and (isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= total):
        raise CorpusError(f"n_q must be between 1 and {total} (the model's {what}), got {n_q!r}")
    if bandwidth is not None:
        try:
            mapped = n_q_for_bandwidth(codec, float(bandwidth))
        except (BandwidthError, TypeError, ValueError) as e:
            valid = ", ".join(format_kbps(k) for k in family_bandwidths(codec))
            raise CorpusError(
                f"bandwidth={bandwidth!r} kbps is not one of this {codec.family} model's ({valid} for 1, 2, "
                f"... {what}); give n_q=K ({what}, 1 to {total}) instead"
            ) from e
        if n_q is not None and mapped != n_q:
            raise CorpusError(
                f"bandwidth={bandwidth:g} kbps is {mapped} {what}, but n_q={n_q}; give one of them"
            )
        n_q = mapped
    count = total if n_q is None else n_q
    return count, float(round(family_bandwidths(codec)[count - 1], 6))


def family_weights_sha256(codec: FamilyCodec) -> str:
    """sha256 of a family model's weights: every tensor of its ``state_dict`` (name, dtype, shape and
    bytes, in name order), so that the same weights from any file or folder give the same hash."""
    h = hashlib.sha256()
    for name, t in sorted(codec.model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
