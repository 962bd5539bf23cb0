"""``rvqkit encode`` / ``rvqkit decode`` for the Mimi, DAC and SNAC models (no commands of its own).

:mod:`rvqkit.cli.codec`'s ``encode`` comes here when ``--model`` is of another family than EnCodec, and
its ``decode`` when the codes file is a family codes file (:mod:`rvqkit.family_codes`). The family models
have no chunked file path yet, so the input is read whole: inputs longer than
:data:`MAX_INPUT_SECONDS` are refused before any is read (see docs/families.md).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ..errors import InputError, RvqkitError
from . import announce_device, check_input, check_output, err, progress_bar

MAX_INPUT_SECONDS = 600  # 10 minutes: the whole signal is read and encoded at once
NAMES = {"mimi": "Mimi", "dac": "DAC", "snac": "SNAC"}


def model_family(model: str) -> str | None:
    """``"mimi"``, ``"dac"`` or ``"snac"`` when ``--model`` is of one of those families, else None
    (EnCodec, or a source of no known family: EnCodec's loader then says what is wrong)."""
    from ..families import family_of

    family = family_of(model)
    return family if family in NAMES else None


def option_given(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave the option ``name`` (on the command line or through its environment
    variable), not its default, to the command of ``ctx``."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def load_family(model: str, device: str):
    """Load a Mimi, DAC or SNAC model with a spinner on stderr."""
    from ..families import load_family_model
    from ..runtime import resolve_device

    device, why = resolve_device(device)
    with err.status(f"Loading {escape(model)} ..."):
        codec = load_family_model(model, device=device)
    announce_device(str(codec.device), why)
    return codec


def encode_family(
    input: Path, output: Path, model: str, bandwidth: float | None, device: str, overwrite: bool
) -> None:
    """Encode ``input`` with a Mimi, DAC or SNAC model to a family codes file at ``bandwidth`` kbps (one of
    the model's; None: all codebooks)."""
    from ..audio import audio_info, read_audio
    from ..family_codes import from_codec, n_q_for_bandwidth, save_family_codes

    check_output(output, overwrite, (input,))
    info = audio_info(input)
    seconds = info.frames / info.samplerate
    if seconds > MAX_INPUT_SECONDS:
        raise InputError(
            f"{input} is {seconds:.0f} s long; Mimi, DAC and SNAC files are encoded whole, at most "
            f"{MAX_INPUT_SECONDS} s ({MAX_INPUT_SECONDS // 60} min): cut it, or encode pieces from Python"
        )
    codec = load_family(model, device)
    n_q = None if bandwidth is None else n_q_for_bandwidth(codec, bandwidth)
    x, sr = read_audio(input)
    label = f"encode {NAMES[codec.family]}" + ("" if bandwidth is None else f" {bandwidth:g} kbps")
    with progress_bar(label, seconds) as update:
        (item,) = codec.prepare(x, sr)  # at the model's rate and channels: its length is the file's
        codes = codec.encode(item, codec.sample_rate, n_q)
        update(seconds)
    result = from_codec(codec, codes, item.shape[-1])
    save_family_codes(output, result, overwrite=overwrite)
    frames = result.rows()[-1].shape[-1]
    err.print(
        f"wrote {escape(str(output))}: {result.n_q} {'levels' if codec.family == 'snac' else 'codebooks'} x "
        f"{frames} frames, {result.bandwidth:.3g} kbps ({NAMES[codec.family]}, {escape(codec.source)})"
    )


def model_for_family_file(model: str | None, family: str, named: str, source: Path) -> str:
    """The weights for a family codes file: ``--model`` when given, else the model the file names only if
    it is a published hub id of that family (as EnCodec's files: a file never chooses a local path or
    another repository)."""
    from ..families import KNOWN_IDS

    if model:
        return model
    if KNOWN_IDS.get(named) == family:
        return named
    known = ", ".join(k for k, f in KNOWN_IDS.items() if f == family and "/" in k)
    raise RvqkitError(
        f"{source} names the model {named!r}, not a published {NAMES[family]} id ({known}); pass --model"
    )


def decode_family(
    input: Path, output: Path, model: str | None, n_q: int | None, device: str, overwrite: bool
) -> None:
    """Decode a family codes file to audio (exactly the encoded length at the model's rate), from the first
    ``n_q`` codebooks (SNAC: levels) when given."""
    from ..audio import write_audio
    from ..family_codes import check_family_codes, load_family_codes

    check_input(input)
    check_output(output, overwrite, (input,))
    codes = load_family_codes(input)
    codec = load_family(model_for_family_file(model, codes.family, codes.model, input), device)
    check_family_codes(codes, codec, str(input))
    if n_q is not None:
        if not 1 <= n_q <= codes.n_q:
            raise RvqkitError(f"n_q must be between 1 and {codes.n_q} (the file's codebooks), got {n_q}")
        codes.codes = codes.codes[:n_q]
    seconds = codes.length / codec.sample_rate
    with progress_bar(f"decode {NAMES[codec.family]}", seconds) as update:
        audio = codec.decode(codes.codes, length=codes.length)
        update(seconds)
    write_audio(output, audio.numpy(), codec.sample_rate, overwrite=overwrite)
    err.print(f"wrote {escape(str(output))} ({seconds:.2f} s, {codes.n_q} codebooks, {NAMES[codec.family]})")
