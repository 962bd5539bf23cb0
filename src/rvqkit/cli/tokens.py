"""``rvqkit tokens`` (codes or audio → language-model token ids) and ``rvqkit detokenize`` (token ids →
audio).

The token file format (``.npz``, ``.json``, ``.txt``) lives in :mod:`rvqkit.tokens.files`; its names
(``FORMAT``, ``VERSION``, ``save_tokens``, ``load_tokens``, ``ids_text``, ``source_meta``) are
re-exported here for compatibility.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import torch
import typer

from ..errors import RvqkitError
from ..tokens.files import FORMAT, VERSION, file_meta, ids_text, load_tokens, save_tokens, source_meta
from . import (
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    BandwidthOpt,
    DeviceOpt,
    FileModelOpt,
    ForceOpt,
    ModelOpt,
    OverwriteOpt,
    ThreadsOpt,
    app,
    check_output,
    check_weights,
    err,
    load_codec,
    model_for_file,
    progress_bar,
    user_errors,
)

if TYPE_CHECKING:
    from ..tokens import TokenLayout

__all__ = ["FORMAT", "VERSION", "ids_text", "load_tokens", "save_tokens", "source_meta"]


def parse_special(text: str | None, name: str) -> bool | int:
    """``None`` → no token, ``"auto"`` → next free id, ``"17"`` → id 17."""
    if text is None:
        return False
    if text.strip().lower() == "auto":
        return True
    try:
        return int(text)
    except ValueError as e:
        raise RvqkitError(f"--{name} takes 'auto' or a token id, got {text!r}") from e


def parse_ids(text: str | None, name: str) -> int | list[int] | None:
    if text is None:
        return None
    try:
        ids = [int(p) for p in text.split(",") if p.strip()]
    except ValueError as e:
        raise RvqkitError(f"--{name} takes a token id or comma-separated ids, got {text!r}") from e
    return ids[0] if len(ids) == 1 else ids


@app.command()
@user_errors
def tokens(
    input: Annotated[
        Path, typer.Argument(help="Codes file (.npz from `rvqkit encode`, any family) or an audio file.")
    ],
    layout: Annotated[
        str, typer.Option("--layout", "-l", help="flatten, codebook, delay or parallel.")
    ] = "flatten",
    n_q: Annotated[
        int | None, typer.Option("--n-q", help="Use the first K codebooks (default: all the codes hold).")
    ] = None,
    offset: Annotated[
        int, typer.Option("--offset", help="Id of the first audio token (e.g. a text vocabulary size).")
    ] = 0,
    begin: Annotated[
        str | None, typer.Option("--begin", help="Begin token: 'auto' (next free id) or an id.")
    ] = None,
    end: Annotated[str | None, typer.Option("--end", help="End token: 'auto' or an id.")] = None,
    pad: Annotated[int | None, typer.Option("--pad", help="Pad id (default: next free id).")] = None,
    delay_pad: Annotated[
        str | None,
        typer.Option(
            "--delay-pad", help="Delay layout: empty-cell id, or one id per codebook (comma-separated)."
        ),
    ] = None,
    shift: Annotated[
        bool | None,
        typer.Option(
            "--shift/--no-shift",
            metavar="",
            help="Shift codebook k's ids by k x codebook size (default: single-stream layouts).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Save to .npz, .json or .txt instead of printing.")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", metavar="", help="Print JSON (settings and ids) instead of plain ids.")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    bandwidth: BandwidthOpt = 6.0,
    device: DeviceOpt = DEFAULT_DEVICE,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Turn codes into language-model token ids (print them, or save them with --out).

    An audio input is encoded first with --model at --bandwidth; a codes file is used as it is."""
    from ..encoded import Encoded
    from ..tokens import TokenLayout

    if out is not None:
        check_output(out, overwrite, (input,))
        if out.suffix.lower() not in (".npz", ".json", ".txt"):
            raise RvqkitError(f"{out}: token files end in .npz, .json or .txt")
    from ..family_codes import is_family_codes_file

    if input.suffix.lower() == ".npz" and is_family_codes_file(input):  # Mimi, DAC or SNAC codes
        from .family_tokens import tokens_of_family_file

        settings: dict[str, Any] = dict(
            begin=parse_special(begin, "begin"), end=parse_special(end, "end"), pad=pad
        )
        settings.update(delay_pad=parse_ids(delay_pad, "delay-pad"), shift=shift)
        return tokens_of_family_file(input, out, json_out, layout, n_q, offset, **settings)
    if input.suffix.lower() == ".npz":
        encoded = Encoded.load(input)
    else:
        from ..audio import audio_info
        from ..chunked import encode_file

        info = audio_info(input)  # read block by block: any length in bounded memory
        codec = load_codec(model, device)
        codec.n_q_for(bandwidth)
        with progress_bar(f"encode {bandwidth:g} kbps", info.frames / info.samplerate) as update:
            encoded = encode_file(codec, input, bandwidth, progress=update)
    lay = TokenLayout(
        layout,  # type: ignore[arg-type]  # a str the CLI checked against LAYOUTS; TokenLayout takes the Literal
        n_q if n_q is not None else encoded.n_q,
        offset=offset,
        begin=parse_special(begin, "begin"),
        end=parse_special(end, "end"),
        pad=pad,
        delay_pad=parse_ids(delay_pad, "delay-pad"),
        shift=shift,
    )
    batch = lay.encode(encoded.codes, encoded.frame_lengths)
    specials = ", ".join(
        f"{k} {v}" for k, v in lay.vocab.specials().items() if not k.startswith("delay_pad_")
    )
    if lay.vocab.delay_pad:
        specials += f", delay pad {','.join(map(str, dict.fromkeys(lay.vocab.delay_pad)))}"
    lo, hi = lay.vocab.offset, lay.vocab.audio_end
    err.print(
        f"{lay.layout}: {lay.n_q} codebooks x {int(encoded.frame_lengths.max())} frames -> ids "
        f"{tuple(batch.ids.shape)}; audio ids [{lo}, {hi}), {specials}; vocab size {lay.vocab_size}",
        highlight=False,
    )
    emit_tokens(out, json_out, lay, batch, encoded)


def emit_tokens(out: Path | None, json_out: bool, lay: TokenLayout, batch: Any, source: Any) -> None:
    """Where ``rvqkit tokens`` puts its ids: the token file ``out`` (with ``source``'s facts), else one JSON
    document on stdout (``json_out``), else the ids as text on stdout."""
    if out is not None:
        save_tokens(out, lay, batch, source)
        err.print(f"wrote {out}", highlight=False)
    elif json_out:
        doc = file_meta(lay, source)
        doc["items"] = [it.tolist() for it in batch.items()]
        print(json.dumps(doc))
    else:
        print(ids_text(batch.items()), end="")


@app.command()
@user_errors
def detokenize(
    input: Annotated[Path, typer.Argument(help="Token file (.npz or .json) written by `rvqkit tokens`.")],
    output: Annotated[
        Path, typer.Argument(help="Audio to write (.wav or .flac); a codes file (.npz) for Mimi/DAC tokens.")
    ],
    model: FileModelOpt = None,
    item: Annotated[int, typer.Option("--item", help="Which item of a batch to write.")] = 0,
    device: DeviceOpt = DEFAULT_DEVICE,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
    force: ForceOpt = False,
) -> None:
    """Turn token ids back into codes (checking every token) and decode them to audio."""
    from ..audio import write_audio

    check_output(output, overwrite, (input,))
    lay, ids, mask, source, arrays = load_tokens(input)
    if source.get("family"):  # Mimi or DAC tokens: back to a family codes file
        from .family_tokens import detokenize_to_family_file

        return detokenize_to_family_file(input, output, lay, ids, mask, source, arrays)
    codes, frame_lengths = lay.decode(ids, mask)
    if not 0 <= item < codes.shape[0]:
        raise RvqkitError(f"--item {item}: the file holds {codes.shape[0]} items")
    codec = load_codec(model_for_file(model, source.get("model"), input), device)
    if source.get("model") == codec.name:  # (another model fails below, with its own error)
        check_weights(source.get("weights_sha256"), codec, input, force)
    stored = arrays.get("frame_lengths")
    if (
        stored is not None
        and np.array_equal(np.asarray(stored), frame_lengths.numpy())
        and "lengths" in arrays
    ):
        lengths = torch.as_tensor(np.asarray(arrays["lengths"]), dtype=torch.long)
        scales = (
            torch.as_tensor(np.asarray(arrays["scales"]), dtype=torch.float32) if "scales" in arrays else None
        )
    elif codec.config.normalize:
        raise RvqkitError(
            f"{codec.name} needs the per-segment scales of the original codes; {input} has none for these tokens"
        )
    else:  # tokens of another length (edited, generated): every frame is a whole hop
        if int(frame_lengths[item]) == 0:
            raise RvqkitError(f"item {item} of {input} holds no frames")
        lengths, scales = frame_lengths * codec.hop_length, None
    one = codec.wrap_codes(  # the chosen item: codes from tokens, not from these weights
        codes[item : item + 1, :, : int(frame_lengths[item])],
        None if scales is None else scales[item : item + 1],
        lengths[item : item + 1],
        frame_lengths[item : item + 1],
        encoded_here=False,
    )
    with err.status("Decoding ..."):
        audio = codec.decode(one)
    write_audio(output, audio[0].cpu().numpy(), codec.sample_rate, overwrite=overwrite)
    n = int(one.lengths[0])
    err.print(f"wrote {output} ({n / codec.sample_rate:.2f} s from {lay.n_q} codebooks)", highlight=False)
