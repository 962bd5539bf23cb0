"""``rvqkit tokens`` (codes or audio → language-model token ids) and ``rvqkit detokenize`` (token ids →
audio).

Token files: ``.npz`` (``ids`` int64, ``attention_mask`` bool, ``frame_lengths``, ``lengths`` in samples,
``scales`` for the 48 kHz model, and ``meta``: UTF-8 JSON with the layout settings and the model; no
pickle), ``.json`` (the same facts, with each item's ids without padding under ``items``) or ``.txt`` (ids
only: one line per item, or per stream with a blank line between items, as printed to stdout).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from ..errors import RvqkitError
from . import (
    DEFAULT_MODEL,
    BandwidthOpt,
    DeviceOpt,
    FileModelOpt,
    ModelOpt,
    OverwriteOpt,
    app,
    check_output,
    err,
    load_codec,
    user_errors,
)

FORMAT = "rvqkit-tokens"
VERSION = 1


def parse_special(text: str | None, name: str) -> bool | int:
    """``None`` → no token, ``"auto"`` → next free id, ``"17"`` → id 17."""
    if text is None:
        return False
    if text.strip().lower() == "auto":
        return True
    try:
        return int(text)
    except ValueError:
        raise RvqkitError(f"--{name} takes 'auto' or a token id, got {text!r}") from None


def parse_ids(text: str | None, name: str) -> int | list[int] | None:
    if text is None:
        return None
    try:
        ids = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise RvqkitError(f"--{name} takes a token id or comma-separated ids, got {text!r}") from None
    return ids[0] if len(ids) == 1 else ids


def ids_text(items: list[torch.Tensor]) -> str:
    """One line of ids per item (per stream for multi-stream layouts, items separated by a blank line)."""
    blocks = []
    for it in items:
        rows = it[None] if it.ndim == 1 else it
        blocks.append("\n".join(" ".join(map(str, r.tolist())) for r in rows))
    return ("\n\n" if items and items[0].ndim == 2 else "\n").join(blocks) + "\n"


def source_meta(encoded) -> dict[str, Any]:
    return {
        "model": encoded.model,
        "weights_sha256": encoded.weights_sha256,
        "sample_rate": encoded.sample_rate,
        "channels": encoded.channels,
        "bandwidth": encoded.bandwidth,
    }


def save_tokens(path: Path, layout, batch, encoded) -> None:
    """Write a token file by suffix (.npz, .json, .txt); the caller checks overwriting."""
    suffix = path.suffix.lower()
    meta = {"format": FORMAT, "version": VERSION, "layout": layout.settings(), "source": source_meta(encoded)}
    if suffix == ".npz":
        arrays = {
            "ids": batch.ids.numpy(),
            "attention_mask": batch.attention_mask.numpy(),
            "frame_lengths": encoded.frame_lengths.numpy().astype(np.int64),
            "lengths": encoded.lengths.numpy().astype(np.int64),
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        }
        if encoded.scales is not None:
            arrays["scales"] = encoded.scales.numpy().astype(np.float32)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    elif suffix == ".json":
        meta["frame_lengths"] = encoded.frame_lengths.tolist()
        meta["lengths"] = encoded.lengths.tolist()
        meta["scales"] = None if encoded.scales is None else encoded.scales.tolist()
        meta["items"] = [it.tolist() for it in batch.items()]
        path.write_text(json.dumps(meta) + "\n")
    elif suffix == ".txt":
        path.write_text(ids_text(batch.items()))
    else:
        raise RvqkitError(f"{path}: token files end in .npz, .json or .txt")


def load_tokens(path: Path) -> tuple[Any, torch.Tensor, torch.Tensor | None, dict[str, Any], dict[str, Any]]:
    """(layout, ids, attention mask or None, source facts, arrays: lengths / frame_lengths / scales)."""
    from ..tokens import TokenLayout

    if not path.is_file():
        raise RvqkitError(f"{path}: no such token file")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(bytes(arrays.pop("meta").astype(np.uint8)).decode())
            ids = torch.from_numpy(arrays.pop("ids").astype(np.int64))
            mask = torch.from_numpy(arrays.pop("attention_mask").astype(bool))
        elif path.suffix.lower() == ".json":
            meta = json.loads(path.read_text())
            layout = TokenLayout.from_settings(meta["layout"])
            batch = layout.pad_items([torch.as_tensor(it, dtype=torch.long) for it in meta["items"]])
            ids, mask = batch.ids, batch.attention_mask
            arrays = {
                k: np.asarray(meta[k])
                for k in ("lengths", "frame_lengths", "scales")
                if meta.get(k) is not None
            }
        else:
            raise RvqkitError(
                f"{path}: detokenize reads .npz or .json token files written by `rvqkit tokens`"
            )
    except RvqkitError:
        raise
    except Exception as e:  # zip, JSON, key, dtype errors of a damaged file
        raise RvqkitError(f"{path}: not a readable token file ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise RvqkitError(f"{path}: not an rvqkit token file (format {FORMAT} version {VERSION})")
    return TokenLayout.from_settings(meta["layout"]), ids, mask, meta.get("source") or {}, arrays


@app.command()
@user_errors
def tokens(
    input: Annotated[Path, typer.Argument(help="Codes file (.npz from `rvqkit encode`) or an audio file.")],
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
            help="Shift codebook k's ids by k x codebook size (default: single-stream layouts).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Save to .npz, .json or .txt instead of printing.")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON (settings and ids) instead of plain ids.")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    bandwidth: BandwidthOpt = 6.0,
    device: DeviceOpt = "cpu",
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
    if input.suffix.lower() == ".npz":
        encoded = Encoded.load(input)
    else:
        from ..audio import read_audio

        audio, sr = read_audio(input)
        codec = load_codec(model, device)
        codec.n_q_for(bandwidth)
        with err.status(f"Encoding {audio.shape[-1] / sr:.1f} s at {bandwidth:g} kbps ..."):
            encoded = codec.encode(audio, sr, bandwidth=bandwidth)
    lay = TokenLayout(
        layout,  # type: ignore[arg-type]
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
    if out is not None:
        save_tokens(out, lay, batch, encoded)
        err.print(f"wrote {out}", highlight=False)
    elif json_out:
        doc = {"format": FORMAT, "version": VERSION, "layout": lay.settings(), "source": source_meta(encoded)}
        doc["items"] = [it.tolist() for it in batch.items()]
        print(json.dumps(doc))
    else:
        print(ids_text(batch.items()), end="")


@app.command()
@user_errors
def detokenize(
    input: Annotated[Path, typer.Argument(help="Token file (.npz or .json) written by `rvqkit tokens`.")],
    output: Annotated[Path, typer.Argument(help="Audio to write (.wav or .flac).")],
    model: FileModelOpt = None,
    item: Annotated[int, typer.Option("--item", help="Which item of a batch to write.")] = 0,
    device: DeviceOpt = "cpu",
    overwrite: OverwriteOpt = False,
) -> None:
    """Turn token ids back into codes (checking every token) and decode them to audio."""
    from ..audio import write_audio
    from ..weights import HUB_IDS

    check_output(output, overwrite, (input,))
    lay, ids, mask, source, arrays = load_tokens(input)
    codes, frame_lengths = lay.decode(ids, mask)
    if not 0 <= item < codes.shape[0]:
        raise RvqkitError(f"--item {item}: the file holds {codes.shape[0]} items")
    name = model or source.get("model")
    if not name:
        raise RvqkitError(f"{input} names no model; pass --model")
    codec = load_codec(HUB_IDS.get(name, name), device)
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
