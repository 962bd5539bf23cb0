"""``rvqkit corpus encode`` / ``decode`` / ``stats``: whole corpora to sharded Parquet, back, and
what they hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import (
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    DeviceOpt,
    ModelOpt,
    OverwriteOpt,
    ThreadsOpt,
    announce_device,
    app,
    err,
    load_codec,
    threads_option,
    user_errors,
)

StartOverOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        metavar="",
        help="Start over: remove an earlier job's output in OUT_DIR (rvqkit's files only).",
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
        ) from e
    return corpus


class EncodeBar:
    """The ``corpus encode`` progress bar on stderr, fed by the library's progress callback: items
    encoded, hours of audio and the real-time factor. Started at the first report (so nothing is drawn
    for a job that fails before encoding), stopped before the summary or an error line."""

    def __init__(self, console: Console, enabled: bool = True):
        self.console, self.enabled = console, enabled
        self.progress: Progress | None = None
        self.task: Any = None

    def __call__(self, p: Any) -> None:
        from ..corpus.progress import speedup

        if not self.enabled:
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]encoding"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("items"),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.progress.start()
            self.task = self.progress.add_task("encode", total=p.total, completed=p.done, stats="")
        rtf = p.rtf
        speed = f"RTF {rtf:.3g} ({speedup(rtf)} real time)" if rtf else "RTF -"
        stats = f"{p.audio_seconds / 3600:.3f} h audio, {speed}, {p.errors} errors"
        self.progress.update(self.task, completed=p.done, stats=stats)

    def note(self, message: str) -> None:
        """A line above the bar (or alone when there is none)."""
        (self.progress.console if self.progress else self.console).print(
            f"[yellow]note:[/] {escape(message)}", highlight=False
        )

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


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
    bandwidth: Annotated[
        float | None,
        typer.Option(
            "--bandwidth",
            "-b",
            help="Target bandwidth in kbps (EnCodec: default 6). Mimi, DAC, SNAC: only one of the model's "
            "exact values; else use --n-q.",
        ),
    ] = None,
    n_q: Annotated[
        int | None,
        typer.Option(
            "--n-q",
            min=1,
            help="Mimi, DAC, SNAC: codebooks to keep (SNAC: levels, coarsest first); default: all.",
        ),
    ] = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Items per Parquet shard.")] = 1000,
    first_shard_size: Annotated[
        int | None,
        typer.Option(
            "--first-shard-size",
            min=1,
            help="Items of the first shard, written early so that a job killed soon keeps its work "
            "(default 16; a resumed job keeps its own).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=0, help="Audio decoding processes (default: cores - 1; 0: in-process)."
        ),
    ] = None,
    threads: Annotated[
        int | None, threads_option(" The audio decoding workers run niced beside them.")
    ] = None,
    lstm_batch: Annotated[
        int,
        typer.Option(
            "--lstm-batch",
            min=1,
            help="On CPU, items whose encoder LSTM runs as one batch (faster; codes can differ from "
            "`rvqkit encode`'s at rare near-ties). 1: every item exactly as `rvqkit encode`. Ignored on GPU.",
        ),
    ] = 8,
    window: Annotated[int, typer.Option("--window", min=1, help="Items sorted by length together.")] = 256,
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
        bool,
        typer.Option(
            "--codes/--no-codes", metavar="", help="Write the codes column (--no-codes: tokens only)."
        ),
    ] = True,
    engine: Annotated[str, typer.Option("--engine", help="local or ray.")] = "local",
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster to join (auto: the local `ray start`).")
    ] = None,
    num_actors: Annotated[
        int | None, typer.Option("--num-actors", help="Ray codec actors (default: one per CPU core or GPU).")
    ] = None,
    overwrite: StartOverOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="No progress bar.")] = False,
) -> None:
    """Encode every item of SOURCE to RVQ codes in sharded Parquet under OUT_DIR, with EnCodec or a
    Mimi, DAC or SNAC model.

    Killed or failed runs resume when re-run with the same command; unusable items are listed in
    OUT_DIR/errors.jsonl."""
    corpus = _corpus()
    from ..corpus.progress import speedup
    from .family import load_family, model_family
    from .tokens import parse_special

    codec: Any = load_family(model, device) if model_family(model) else load_codec(model, device)
    bar = EncodeBar(err, enabled=not quiet)
    try:
        summary = corpus.encode_corpus(
            source,
            out_dir,
            codec,
            bandwidth,
            n_q=n_q,
            device=str(codec.device),
            shard_size=shard_size,
            first_shard_size=first_shard_size,
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
            progress=bar,
            log=bar.note,
            model_source=model,
        )
    finally:
        bar.stop()
    c = summary.counts
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(c["errors_by_reason"].items()))
    rtf = summary.rtf
    err.print(
        f"{escape(str(out_dir))}: {c['rows']} rows in {c['shards_with_rows']} shards, {c['errors']} errors"
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
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=0, help="Write at most this many files (rows whose file exists are skipped)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", envvar="RVQKIT_MODEL", help="Weights; default: those in manifest.json."
        ),
    ] = None,
    n_q: Annotated[
        int | None,
        typer.Option("--n-q", help="Decode from the first K codebooks (SNAC: levels) only."),
    ] = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Decode rows of a corpus output back to audio, for spot-listening. Without --id, files that
    exist are skipped (so `--limit 10` again gives the next ten); with --id they are an error unless
    --overwrite."""
    from ..runtime import resolve_device

    corpus = _corpus()
    device, why = resolve_device(device)  # the model loads only once a row is to be decoded
    announce_device(device, why)
    skipped: list[Path] = []
    with err.status("Decoding ..."):
        written = corpus.decode_corpus(
            source,
            out_folder,
            model,
            ids=ids,
            limit=limit,
            n_q=n_q,
            device=device,
            overwrite=overwrite,
            skipped=skipped.append,
        )
    note = f" ({len(skipped)} existing files skipped; --overwrite replaces them)" if skipped else ""
    err.print(f"wrote {len(written)} files to {escape(str(out_folder))}{note}", highlight=False)


@corpus_app.command("stats")
@user_errors
def stats(
    out_dir: Annotated[Path, typer.Argument(help="Corpus output folder (of `rvqkit corpus encode`).")],
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="Print the statistics as JSON instead of tables.")
    ] = False,
    png: Annotated[
        Path | None,
        typer.Option("--png", help="Also draw durations, codebook use and code histograms to this PNG."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", metavar="", help="Replace the PNG if it exists.")
    ] = False,
) -> None:
    """Hours, items, errors, per-codebook use (distinct codes, perplexity) and tokens per second of each
    token layout of a corpus output."""
    _corpus()
    from ..corpus.stats import corpus_stats, save_stats_png
    from . import check_output

    if png is not None:
        check_output(png, overwrite)
    with err.status("Reading shards ..."):
        st = corpus_stats(out_dir)
    if as_json:
        typer.echo(json.dumps(st.to_dict(), indent=1))
    else:
        Console(soft_wrap=True).print(*stats_tables(st))
    if png is not None:
        with err.status("Drawing ..."):
            save_stats_png(st, png)
        err.print(f"wrote {escape(str(png))}", highlight=False)


def stats_tables(st: Any) -> list[Table]:
    """The rich tables of ``corpus stats``: summary, codebooks, token layouts."""
    summary = Table(title=f"corpus {escape(st.out_dir)}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    reasons = ", ".join(f"{k} {v}" for k, v in st.errors_by_reason.items())
    for key, value in (
        (
            "status",
            st.status + ("" if st.status == "complete" else f" ({st.shards_done}/{st.num_shards} shards)"),
        ),
        (
            "model",
            ("" if st.family in ("encodec", st.model) else f"{st.family} ")
            + f"{st.model}, {st.bandwidth:g} kbps, {st.n_q} {'levels' if st.family == 'snac' else 'codebooks'} "
            f"of {st.codebook_size}",
        ),
        ("audio", f"{st.hours:.3f} h ({st.audio_seconds:.1f} s)"),
        ("items", str(st.items)),
        ("rows", str(st.rows)),
        ("errors", f"{st.errors}" + (f" ({reasons})" if reasons else "")),
        (
            "frames",
            f"{st.frames} ({st.frame_rate:g} per second{', finest level' if st.family == 'snac' else ''})",
        ),
    ):
        summary.add_row(key, escape(value))
    books = Table(title="codebook use", title_justify="left")
    for name in ("codebook", "distinct codes", "used", "entropy (bits)", "perplexity"):
        books.add_column(name, justify="right")
    for b in st.codebooks:
        books.add_row(
            str(b.codebook),
            str(b.distinct),
            f"{100 * b.distinct / st.codebook_size:.1f} %",
            f"{b.entropy_bits:.2f}",
            f"{b.perplexity:.1f}",
        )
    layouts = Table(title="token layouts, per second of audio", title_justify="left")
    for name, justify in (
        ("layout", "left"),
        ("streams", "right"),
        ("positions/s", "right"),
        ("tokens/s", "right"),
        ("settings", "left"),
    ):
        layouts.add_column(name, justify=justify)  # type: ignore[arg-type]  # rich JustifyMethod literals
    for r in st.layouts:
        layouts.add_row(
            r.layout,
            str(r.streams),
            f"{r.positions_per_second:.1f}",
            f"{r.tokens_per_second:.1f}",
            r.settings,
        )
    return [summary, books, layouts] if st.layouts else [summary, books]  # SNAC: no layout applies
