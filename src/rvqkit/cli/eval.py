"""``rvqkit eval``: objective quality per bandwidth and per codebook count against Opus and MP3, for
EnCodec, Mimi, DAC and SNAC models, one model or several side by side (``--model`` repeated)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..errors import RvqkitError
from . import (
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    DeviceOpt,
    OverwriteOpt,
    app,
    err,
    load_codec,
    threads_option,
    user_errors,
)


def load_models(models: list[str], device: str) -> list:
    """Load each ``--model``: a Mimi, DAC or SNAC model as a FamilyCodec, any other as EnCodec's Codec."""
    from .family import load_family, model_family

    out = []
    for m in models:
        out.append(load_family(m, device) if model_family(m) else load_codec(m, device))
    return out


def parse_list(text: str | None, kind: type, what: str) -> list | None:
    """``"1,2,4"`` → ``[1, 2, 4]`` (``kind`` of each)."""
    if text is None:
        return None
    try:
        return [kind(p) for p in text.split(",") if p.strip()]
    except ValueError as e:
        raise RvqkitError(f"{what} takes a comma-separated list like 1,2,4; got {text!r}") from e


@app.command("eval")
@user_errors
def eval_command(
    inputs: Annotated[
        list[str],
        typer.Argument(help="Audio files, folders or manifests (.csv/.jsonl), as `rvqkit corpus` reads."),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Report folder (report.md/.json, items.csv, plots, index.html)."),
    ],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="EnCodec, Mimi, DAC or SNAC model: hub id, model folder or weights file (default: "
            f"$RVQKIT_MODEL, else {DEFAULT_MODEL}). Repeat it to compare models in one report.",
        ),
    ] = None,
    bandwidth: Annotated[
        str | None, typer.Option("--bandwidth", "-b", help="Bandwidths in kbps, e.g. 6,12 (default: all).")
    ] = None,
    n_q: Annotated[
        str | None,
        typer.Option(
            "--n-q",
            help="First-k codebook counts, e.g. 1,2,8 (default: all): EnCodec at the top bandwidth; "
            "SNAC: first k levels.",
        ),
    ] = None,
    metrics: Annotated[
        str | None, typer.Option("--metrics", help="Metrics to compute, e.g. si_sdr,pesq (default: all).")
    ] = None,
    no_baselines: Annotated[
        bool, typer.Option("--no-baselines", metavar="", help="Skip the Opus and MP3 baselines.")
    ] = False,
    lm_model: Annotated[
        Path | None,
        typer.Option("--lm-model", help="Entropy-coding LM checkpoint; default: searched beside the model."),
    ] = None,
    lm_items: Annotated[
        int, typer.Option("--lm-items", help="Items whose .ecdc is LM entropy-coded (slow: frame by frame).")
    ] = 3,
    workers: Annotated[
        int, typer.Option("--workers", help="Metric processes beside the model (0: in the main process).")
    ] = 2,
    examples: Annotated[int, typer.Option("--examples", help="Items with audio players in index.html.")] = 3,
    no_plots: Annotated[
        bool, typer.Option("--no-plots", metavar="", help="Write the report without PNG plots.")
    ] = False,
    device: DeviceOpt = DEFAULT_DEVICE,
    threads: Annotated[
        int | None, threads_option(" With --workers, the model keeps the cores the workers leave.")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Measure what each bandwidth and each codebook count costs in quality on your audio (SI-SDR, mel and
    multi-resolution STFT distances, PESQ, STOI, ViSQOL), with the real entropy-coded bitrate, codebook
    usage and LM tokens per second, against Opus and MP3 at the same bitrates. Mimi, DAC and SNAC models
    are scored per codebook count; repeat --model to compare models side by side in one report."""
    _eval(**locals())  # user_errors words the library's n_q=/bandwidths= as --n-q/--bandwidth


def _eval(
    inputs: list[str],
    out: Path,
    model: list[str] | None,
    bandwidth: str | None,
    n_q: str | None,
    metrics: str | None,
    no_baselines: bool,
    lm_model: Path | None,
    lm_items: int,
    workers: int,
    examples: int,
    no_plots: bool,
    device: str,
    threads: int | None,
    overwrite: bool,
) -> None:
    from ..eval.comparison import check_compare_settings, compare, model_name
    from ..eval.families import check_family_settings
    from ..eval.metrics import METRICS
    from ..eval.report import TITLES, check_report_folder, main_table, summary_rows, write_report
    from ..eval.run import list_inputs, run_eval
    from ..family_codec import FamilyCodec
    from ..lm import find_lm

    models = list(model or [os.environ.get("RVQKIT_MODEL") or DEFAULT_MODEL])
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise RvqkitError(f"--model {twice[0]} is given more than once")

    check_report_folder(out, overwrite)
    if workers < 0 or lm_items < 0 or examples < 0:
        raise RvqkitError("--workers, --lm-items and --examples must be 0 or more")
    bws = parse_list(bandwidth, float, "--bandwidth")
    ks = parse_list(n_q, int, "--n-q")
    names = parse_list(metrics, str, "--metrics")
    if lm_model is not None and not lm_model.is_file():
        raise RvqkitError(f"{lm_model}: no such LM checkpoint (--lm-model)")
    unknown = [m for m in names or () if m not in METRICS]
    if unknown:
        raise RvqkitError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    list_inputs(inputs)  # a missing input fails before the model loads
    codecs = load_models(models, device)
    encodec = [c for c in codecs if not isinstance(c, FamilyCodec)]
    if lm_model is not None and not encodec:
        raise RvqkitError("--lm-model is EnCodec's entropy coding; none of the models is EnCodec")
    if bws is not None and not encodec:
        raise RvqkitError(
            "--bandwidth selects EnCodec bandwidths; Mimi, DAC and SNAC rows are codebook counts: use --n-q"
        )
    lms: list[Path | str | None] = []
    for m, codec in zip(models, codecs, strict=True):
        lm: Path | str | None = None if isinstance(codec, FamilyCodec) else lm_model
        if lm is None and lm_items > 0 and not isinstance(codec, FamilyCodec):
            try:
                lm = find_lm(codec.name, near=m if Path(m).exists() else None)
            except RvqkitError:  # no LM is known for this model
                lm = None
        lms.append(lm)
    # every model's settings checked before anything runs (and before the progress bar)
    if len(codecs) > 1:
        check_compare_settings(codecs, [model_name(c) for c in codecs], bws, ks)
    elif isinstance(codecs[0], FamilyCodec):
        check_family_settings(codecs[0], bws, ks)
    columns = [
        TextColumn("eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("items x settings"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err) as bar:
        task = bar.add_task("eval", total=None)
        options: dict[str, Any] = {
            "baselines": not no_baselines,
            "metrics": names,
            "lm_items": lm_items,
            "workers": workers,
            "examples": examples,
            "progress": lambda done, total: bar.update(task, completed=done, total=total),
        }
        if len(codecs) == 1:
            result = run_eval(codecs[0], inputs, bws, ks, lm=lms[0], **options)
        else:
            result = compare(codecs, inputs, bws, ks, lm=lms, **options)
    files = write_report(result, out, overwrite=overwrite, plots=not no_plots)
    info = result.info
    head, cells = main_table(summary_rows(result.rows, tuple(info["metrics"])), info)
    table = Table(title=f"{info['model']}: means over {info['items_scored']} items", title_justify="left")
    for h in head:
        table.add_column(h, justify="right")
    for row in cells:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # piped: don't squeeze the table
    for m, status in info["metrics"].items():
        if status != "ok":
            err.print(f"skipped {TITLES[m]}: {status}", highlight=False, markup=False)
    for codec_name, why in info["baselines"]["missing"].items():
        err.print(f"baseline {codec_name} missing: {why}", highlight=False, markup=False)
    for s in info["skipped_items"]:
        err.print(f"skipped item {s['item']}: {s['reason']}", highlight=False, markup=False)
    err.print(f"real bitrate: {info['entropy_coding']['note']}", highlight=False, markup=False)
    if "plots" in info:
        err.print(info["plots"], highlight=False, markup=False)
    err.print(f"wrote {len(files)} files in {out} (open {out / 'index.html'})", highlight=False, markup=False)
