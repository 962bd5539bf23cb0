"""``rvqkit inspect``: the step-by-step walk through the codec as a report, with PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import RvqkitError
from . import (
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    BandwidthOpt,
    DeviceOpt,
    ModelOpt,
    OverwriteOpt,
    ThreadsOpt,
    app,
    err,
    load_codec,
    progress_bar,
    user_errors,
)

DEFAULT_INSPECT_SECONDS = 60.0  # ~1 GB peak RSS on CPU (24 kHz model, 6 kbps)


def parse_ks(text: str | None) -> list[int] | None:
    """``"1,2,4"`` → ``[1, 2, 4]``."""
    if text is None:
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError as e:
        raise RvqkitError(f"--k takes comma-separated codebook counts like 1,2,4; got {text!r}") from e


def print_report(report: dict, plots: list[str], folder: Path | None) -> None:
    from ..inspector import LAYER_COLUMNS, RECON_COLUMNS, overview_rows, table

    out = Console(soft_wrap=True)
    for label, value in overview_rows(report):
        out.print(f"[bold]{label:>12}[/]: {escape(str(value))}", highlight=False)
    for title, rows, cols in (
        (
            "Quantizer layers (residual norm: mean per-frame L2 norm after the layer)",
            report["layers"],
            LAYER_COLUMNS,
        ),
        ("Reconstructions from the first k codebooks", report["reconstructions"], RECON_COLUMNS),
    ):
        head, cells = table(rows, cols)
        t = Table(title=title, title_justify="left")
        for h in head:
            t.add_column(h, justify="right")
        for r in cells:
            t.add_row(*r)
        out.print(t)
    if folder is not None:
        files = ["report.json", "report.md", *plots]
        err.print(f"wrote {', '.join(files)} in {escape(str(folder))}", highlight=False)


@app.command("inspect")
@user_errors
def inspect_command(
    ctx: typer.Context,
    input: Annotated[Path, typer.Argument(help="Audio file (WAV, FLAC, OGG, MP3).")],
    model: ModelOpt = DEFAULT_MODEL,
    bandwidth: BandwidthOpt = 6.0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for report.json, report.md and the PNG plots."),
    ] = None,
    k: Annotated[
        str | None,
        typer.Option(
            "--k", help="Reconstruct from these first-k codebook counts, e.g. 1,2,8 (default 1,2,4,… n_q)."
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", metavar="", help="Print the report as JSON instead of tables.")
    ] = False,
    no_plots: Annotated[
        bool, typer.Option("--no-plots", metavar="", help="With --out, write the report only.")
    ] = False,
    seconds: Annotated[
        float,
        typer.Option(
            "--seconds",
            min=0.01,
            help="Inspect at most this many seconds from the start (the walk holds the whole signal, "
            "each layer's residual and each reconstruction in memory: about 15 MB a second at 24 kHz).",
        ),
    ] = DEFAULT_INSPECT_SECONDS,
    n_q: Annotated[
        int | None,
        typer.Option(
            "--n-q", help="Mimi and DAC models: codebooks to walk (default all; EnCodec: --bandwidth)."
        ),
    ] = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Walk a file through the codec step by step: input, embeddings, each quantizer layer (indices,
    residual norm, codebook usage) and reconstructions from the first k codebooks; with --out, also
    write the report as JSON and Markdown and plot waveforms, log-mel spectrograms, residual norms and codes.

    Mimi and DAC models too (all codebooks unless --n-q is given); not SNAC, whose levels run at several rates."""
    from ..audio import audio_info, read_audio
    from ..inspector import check_report_folder, inspect_audio, json_ready, write_report

    ks = parse_ks(k)
    if out is not None:
        check_report_folder(out, overwrite, plots=not no_plots)
    info = audio_info(input)
    limit = max(1, int(seconds * info.samplerate))
    audio, sr = read_audio(input, max_frames=limit)  # a bounded prefix: the walk is whole-signal
    if info.frames > limit:
        err.print(
            f"note: inspecting the first {limit / sr:.1f} s of {info.frames / sr:.1f} s (--seconds to change)",
            highlight=False,
        )
    from .family import load_family, model_family, option_given

    if model_family(model) is not None:  # Mimi, DAC: rvqkit.family_inspector
        from ..family_inspector import inspect_family

        if option_given(ctx, "bandwidth"):
            raise RvqkitError("--bandwidth is EnCodec's; Mimi and DAC models take --n-q (codebooks)")
        fc = load_family(model, device)
        with progress_bar(f"inspect {audio.shape[-1] / sr:.1f} s", None, unit="model passes") as update:
            insp = inspect_family(fc, audio, sr, n_q=n_q, ks=ks, progress=update)
    else:
        if n_q is not None:
            raise RvqkitError("--n-q is for Mimi and DAC models; EnCodec's codebooks follow --bandwidth")
        codec = load_codec(model, device)
        codec.n_q_for(bandwidth)
        label = f"inspect {audio.shape[-1] / sr:.1f} s at {bandwidth:g} kbps"
        with progress_bar(label, None, unit="model passes") as update:
            insp = inspect_audio(codec, audio, sr, bandwidth=bandwidth, ks=ks, progress=update)
    if out is not None:
        with err.status("Writing the report and plots ..."):
            write_report(insp, out, overwrite=overwrite, plots=not no_plots)
    if json_out:
        print(json.dumps(json_ready({**insp.report, "plots": insp.plots}), indent=2))
        return
    print_report(insp.report, insp.plots, out)
