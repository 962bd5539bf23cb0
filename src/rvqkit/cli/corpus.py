"""``rvqkit corpus encode`` / ``rvqkit corpus decode``: whole corpora to sharded Parquet and back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import DEFAULT_MODEL, BandwidthOpt, DeviceOpt, ModelOpt, OverwriteOpt, app, err, user_errors

StartOverOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Start over: remove an earlier job's output in OUT_DIR (rvqkit's files only)."
    ),
]

corpus_app = typer.Typer(
    name="corpus",
    help="Encode a corpus (folder, manifest or datasets dataset) to sharded Parquet codes, resumably.",
    no_args_is_help=True,
)
app.add_typer(corpus_app, name="corpus")


def _corpus():
    try:
        from .. import corpus
    except ImportError as e:
        from ..errors import RvqkitError

        raise RvqkitError(
            f"corpus commands need pyarrow and datasets: pip install 'rvqkit[corpus]' ({e})"
        ) from None
    return corpus


@corpus_app.command("encode")
@user_errors
def encode(
    source: Annotated[
        str,
        typer.Argument(
            help="Audio folder (recursive), .csv/.jsonl manifest, datasets folder or .parquet, or hub dataset."
        ),
    ],
    out_dir: Annotated[Path, typer.Argument(help="Output folder (created; re-run to resume).")],
    model: ModelOpt = DEFAULT_MODEL,
    bandwidth: BandwidthOpt = 6.0,
    device: DeviceOpt = "cpu",
    shard_size: Annotated[int, typer.Option("--shard-size", help="Items per Parquet shard.")] = 1000,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Audio decoding processes (default: cores - 1; 0: in-process)."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="torch threads for the model on CPU (default: torch's, all cores; decoding workers run niced).",
        ),
    ] = None,
    lstm_batch: Annotated[
        int,
        typer.Option(
            "--lstm-batch",
            help="On CPU, items whose encoder LSTM runs as one batch (faster; codes can differ from "
            "`rvqkit encode`'s at rare near-ties). 1: every item exactly as `rvqkit encode`. Ignored on GPU.",
        ),
    ] = 8,
    window: Annotated[int, typer.Option("--window", help="Items sorted by length together.")] = 256,
    batch_seconds: Annotated[
        float | None,
        typer.Option(
            "--batch-seconds", help="Audio seconds per model call (default: from GPU memory; 240 on CPU)."
        ),
    ] = None,
    min_duration: Annotated[
        float, typer.Option("--min-duration", help="Shorter items (seconds) go to errors.jsonl.")
    ] = 0.05,
    max_duration: Annotated[
        float | None, typer.Option("--max-duration", help="Longer items (seconds) go to errors.jsonl.")
    ] = None,
    audio_column: Annotated[
        str | None, typer.Option("--audio-column", help="Audio column of a datasets source.")
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Split of a datasets source.")] = None,
    tokens: Annotated[
        list[str] | None,
        typer.Option(
            "--tokens",
            help="Also write token ids in this layout: flatten, codebook, delay or parallel (repeatable).",
        ),
    ] = None,
    token_offset: Annotated[
        int, typer.Option("--token-offset", help="Id of the first audio token (e.g. a text vocabulary size).")
    ] = 0,
    token_begin: Annotated[
        str | None, typer.Option("--token-begin", help="Begin token: 'auto' (next free id) or an id.")
    ] = None,
    token_end: Annotated[
        str | None, typer.Option("--token-end", help="End token: 'auto' (next free id) or an id.")
    ] = None,
    codes: Annotated[
        bool, typer.Option("--codes/--no-codes", help="Write the codes column (--no-codes: tokens only).")
    ] = True,
    engine: Annotated[str, typer.Option("--engine", help="local or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster to join (auto: the local `ray start`).")
    ] = None,
    num_actors: Annotated[
        int | None, typer.Option("--num-actors", help="Ray codec actors (default: one per CPU core or GPU).")
    ] = None,
    overwrite: StartOverOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Encode every item of SOURCE to RVQ codes in sharded Parquet under OUT_DIR.

    Killed or failed runs resume when re-run with the same command; unusable items are listed in
    OUT_DIR/errors.jsonl."""
    corpus = _corpus()
    from ..codec import Codec
    from ..corpus.progress import speedup
    from .tokens import parse_special

    with err.status(f"Loading {model} ..."):
        codec = Codec.from_pretrained(model, device=device)
    summary = corpus.encode_corpus(
        source,
        out_dir,
        codec,
        bandwidth,
        device=device,
        shard_size=shard_size,
        workers=workers,
        threads=threads,
        lstm_batch=lstm_batch,
        window=window,
        batch_seconds=batch_seconds,
        min_duration=min_duration,
        max_duration=max_duration,
        audio_column=audio_column,
        split=split,
        tokens=tokens or (),
        token_offset=token_offset,
        token_begin=parse_special(token_begin, "token-begin"),
        token_end=parse_special(token_end, "token-end"),
        codes=codes,
        engine=engine,
        ray_address=ray_address,
        num_actors=num_actors,
        overwrite=overwrite,
        progress=not quiet,
        model_source=model,
    )
    c = summary.counts
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(c["errors_by_reason"].items()))
    rtf = summary.rtf
    err.print(
        f"{out_dir}: {c['rows']} rows in {c['shards_with_rows']} shards, {c['errors']} errors"
        + (f" ({reasons})" if reasons else "")
        + f", {c['audio_seconds'] / 3600:.3f} h of audio; this run: {summary.shards_written} shards written, "
        f"{summary.shards_resumed} already done"
        + (f", RTF {rtf:.3g} ({speedup(rtf)} real time)" if rtf else ""),
        highlight=False,
    )


@corpus_app.command("decode")
@user_errors
def decode(
    source: Annotated[Path, typer.Argument(help="Corpus output folder or one of its .parquet shards.")],
    out_folder: Annotated[Path, typer.Argument(help="Folder for the WAV files (named by id).")],
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="Decode this id (repeatable); default: all rows.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Decode at most this many rows.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", envvar="RVQKIT_MODEL", help="Weights; default: those in manifest.json."
        ),
    ] = None,
    n_q: Annotated[int | None, typer.Option("--n-q", help="Decode from the first K codebooks only.")] = None,
    device: DeviceOpt = "cpu",
    overwrite: OverwriteOpt = False,
) -> None:
    """Decode rows of a corpus output back to audio, for spot-listening."""
    corpus = _corpus()
    with err.status("Decoding ..."):
        written = corpus.decode_corpus(
            source, out_folder, model, ids=ids, limit=limit, n_q=n_q, device=device, overwrite=overwrite
        )
    err.print(f"wrote {len(written)} files to {out_folder}", highlight=False)
