"""What REST clients send, read and checked before any model work: codes as ``.npz`` bytes or JSON, and
``n_q``. Every function here is blocking and bounded by its input's size; the app runs them in worker
threads, never on the event loop."""

from __future__ import annotations

import numpy as np
import pydantic_core
import torch
from pydantic import Field, ValidationError, create_model

from ..codec import Codec
from ..encoded import Encoded
from ..errors import CodesError, RvqkitError
from ..framing import frames_for_length, segment_bounds
from .limits import LimitError, NQError, ServerSettings
from .schemas import EncodedJSON, code_rows

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
AUDIO_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\xff\xf3", b"FORM")


class JSONBodyError(RvqkitError):
    """A JSON codes body that does not match the schema (answered 422 ``bad_request``)."""


def check_n_q(n_q: int | None, held: int) -> None:
    """Raise :class:`NQError` unless ``n_q`` is None or in 1..``held`` (the codebooks the codes hold)."""
    if n_q is not None and not 1 <= n_q <= held:
        raise NQError(f"n_q must be between 1 and {held} (the codebooks the codes hold), got {n_q}")


def encoded_from_npz(data: bytes, codec: Codec, settings: ServerSettings) -> Encoded:
    """Read ``.npz`` codes bytes, bounded: the cost (samples to decode) is checked before arrays load."""
    if not data.startswith(ZIP_MAGIC):
        hint = " (it looks like audio; /v1/encode takes audio)" if data.startswith(AUDIO_MAGIC) else ""
        raise CodesError(
            f"the upload is not an .npz codes file{hint}; send the .npz that /v1/encode?format=npz or "
            "rvqkit encode writes"
        )
    limit = settings.job_samples(codec.sample_rate)
    try:  # bounded: members, dtypes and shapes from the zip directory and npy headers, cost before data
        return Encoded.from_bytes(data, max_samples=limit, what="uploaded codes")
    except CodesError as e:
        if "samples, more than the" in str(e):  # the declared length is over the server's limit
            raise LimitError(str(e)) from e
        raise


def json_model(codec: Codec, settings: ServerSettings) -> type[EncodedJSON]:
    """:class:`EncodedJSON` with the list lengths this server accepts: rows up to the model's codebooks,
    frames up to what the duration limit allows (validation stops at the first element beyond)."""
    frames = frames_for_length(codec.config, settings.job_samples(codec.sample_rate))
    return create_model(
        "EncodedJSON",
        __base__=EncodedJSON,
        codes=(code_rows(frames, codec.num_codebooks), Field(description="[n_q][frames] code indices")),
    )


def parse_json(raw: bytes, model: type[EncodedJSON]) -> EncodedJSON:
    """Validate a JSON body; a mismatch is :class:`JSONBodyError` naming at most 5 problems.

    The JSON is parsed first and validated as Python objects: pydantic's own JSON mode would copy the
    whole input into each "field required" error (a 2 MB body then cost 10x its parse), while here the
    errors only point at objects that exist already."""
    try:
        obj = pydantic_core.from_json(raw)
    except ValueError as e:
        raise JSONBodyError(f"body: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise JSONBodyError("body: a JSON object is expected")
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        parts = [
            f"{'.'.join(str(p) for p in x.get('loc', ())) or 'body'}: {x.get('msg', 'invalid')}"
            for x in e.errors(include_url=False, include_input=False)[:5]
        ]
        raise JSONBodyError("; ".join(parts) or "invalid request") from e


def encoded_from_json(body: EncodedJSON, codec: Codec, settings: ServerSettings) -> Encoded:
    """Check a JSON codes body against the model and build an :class:`Encoded` (batch of 1)."""
    if body.length <= 0:
        raise CodesError(f"length must be a positive number of samples, got {body.length}")
    settings.check_cost(body.length, codec.sample_rate)
    frames = frames_for_length(codec.config, body.length)
    if not body.codes or not 1 <= len(body.codes) <= codec.num_codebooks:
        raise CodesError(f"codes must hold 1..{codec.num_codebooks} codebooks, got {len(body.codes)}")
    if len(body.codes) != body.n_q:
        raise CodesError(f"n_q is {body.n_q} but codes hold {len(body.codes)} codebooks")
    if body.frames != frames or any(len(row) != frames for row in body.codes):
        raise CodesError(
            f"a {body.length}-sample signal has {frames} frames; every codebook row must hold {frames} codes"
        )
    try:
        codes = np.array(body.codes, dtype=np.int64)
    except OverflowError as e:
        raise CodesError(f"codes out of range [0, {codec.codebook_size})") from e
    if codes.min() < 0 or codes.max() >= codec.codebook_size:
        raise CodesError(f"codes out of range [0, {codec.codebook_size})")
    scales = None
    if codec.config.normalize:
        need = len(segment_bounds(codec.config, body.length))
        if body.scales is None or len(body.scales) != need:
            raise CodesError(f"{codec.name} codes need one scale per segment ({need} for this length)")
        s = np.asarray(body.scales, dtype=np.float64)
        if not (np.isfinite(s) & (s > 0)).all():
            raise CodesError("scales must be finite numbers > 0")
        scales = torch.tensor(s[None], dtype=torch.float32)
    enc = Encoded(
        codes=torch.from_numpy(codes)[None],
        scales=scales,
        lengths=torch.tensor([body.length]),
        frame_lengths=torch.tensor([frames]),
        sample_rate=body.sample_rate,
        channels=body.channels,
        bandwidth=codec.config.bandwidth_for_n_q(body.n_q),
        model=body.model,
        weights_sha256=body.weights_sha256,
    )
    codec.check_encoded(enc)
    return enc


def check_npz_codes(enc: Encoded, codec: Codec, settings: ServerSettings) -> None:
    """What the server needs of codes from an ``.npz``: one signal, within the limits, scales > 0."""
    if enc.batch_size != 1:
        raise CodesError(f"the server decodes one signal per request; the file holds {enc.batch_size}")
    n = int(enc.lengths[0]) if enc.lengths.numel() else 0
    if n > 0:
        settings.check_cost(n, codec.sample_rate)
    codec.check_encoded(enc)
    if enc.scales is not None and codec.config.normalize:
        s = enc.scales[0, : len(segment_bounds(codec.config, n))]
        if not bool((torch.isfinite(s) & (s > 0)).all()):
            raise CodesError("scales must be finite numbers > 0")
