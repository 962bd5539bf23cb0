"""The ``rvqkit`` command line.

Commands live in the modules of this package, one module per topic (``codec.py``: roundtrip, encode,
decode, info); :func:`main` imports every module here, and each registers its commands on :data:`app`
with ``@app.command()``. Every error about the user's input is one line on stderr and exit status 1
(2 for bad arguments, as click does); set ``RVQKIT_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import stat
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import InputError, OutputError, RvqkitError, os_error
from ..runtime import tune_allocator
from .messages import cli_message

F = TypeVar("F", bound=Callable[..., Any])
app = typer.Typer(
    name="rvqkit",
    help="Neural audio compression with EnCodec: encode, decode and inspect RVQ codes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"rvqkit {version('rvqkit')}")
        except PackageNotFoundError:  # running from a source tree that is not installed
            from .. import __version__

            typer.echo(f"rvqkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            metavar="",
            is_eager=True,
            callback=_print_version,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Neural audio compression with EnCodec: encode, decode and inspect RVQ codes."""


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar="RVQKIT_MODEL",
        help="Hub id, Hugging Face model folder or Meta .th checkpoint.",
    ),
]
FileModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        envvar="RVQKIT_MODEL",
        help="Weights; default: the preset named in the file (encodec_24khz or encodec_48khz only).",
    ),
]
BandwidthOpt = Annotated[float, typer.Option("--bandwidth", "-b", help="Target bandwidth in kbps.")]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ..."),
]
# metavar="": typer otherwise shows "<bool>" after a flag in --help, as if it took a value
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", metavar="", help="Replace the output file if it exists.")
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", metavar="", help="Decode even if the file records other weights (sha256)."),
]


def _apply_threads(value: int | None) -> int:
    from ..runtime import set_threads

    return set_threads(value)


def threads_option(extra: str = "") -> Any:
    """The ``--threads`` option of every command that runs the model: applied (``torch.set_num_threads``)
    as soon as it is parsed; default :func:`rvqkit.runtime.default_threads`."""
    return typer.Option(
        "--threads",
        min=1,
        callback=_apply_threads,
        show_default=False,
        help="torch CPU threads (default: the physical cores this process may use, or OMP_NUM_THREADS)."
        + extra,
    )


ThreadsOpt = Annotated[int | None, threads_option()]
DEFAULT_DEVICE = "auto"
DEFAULT_MODEL = "facebook/encodec_24khz"


def fail(message: str) -> None:
    """Print ``message`` (plain text: Rich markup in it, e.g. a path ``song [remix].wav``, is escaped) as
    one error line on stderr and exit with status 1."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def debug() -> bool:
    """``RVQKIT_DEBUG`` is set (to anything but empty or 0): print tracebacks, with their causes."""
    return os.environ.get("RVQKIT_DEBUG", "") not in ("", "0")


def user_errors(fn: F) -> F:
    """Turn rvqkit's errors (and anything unexpected) into one line on stderr and exit status 1; with
    ``RVQKIT_DEBUG=1`` the traceback, with its cause chain, comes first."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except RvqkitError as e:
            if debug():
                traceback.print_exception(e)  # the whole chain: "The above exception was the direct cause"
            fail(cli_message(str(e)))
        except Exception as e:
            if debug():
                raise
            fail(f"unexpected {type(e).__name__}: {e} (set RVQKIT_DEBUG=1 for the traceback)")

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature


@contextmanager
def progress_bar(
    label: str, total_seconds: float | None, unit: str | None = None
) -> Iterator[Callable[..., None]]:  # update(seconds_done, total=None)
    """A rich progress bar over seconds of audio, with the real-time factor; yields the update callback.
    With ``unit`` (e.g. ``"model passes"``) it counts that instead, without the real-time factor."""
    count = (
        "{task.completed:.1f}/{task.total:.1f} s audio"
        if unit is None
        else "{task.completed:.0f}/{task.total:.0f} " + unit
    )
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn(count),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    start = time.perf_counter()
    progress = Progress(*columns, console=err, transient=False)
    task = progress.add_task(escape(label), total=total_seconds, speed="")
    started = False

    def update(seconds_done: float, total: float | None = None) -> None:
        nonlocal started
        if total is not None:  # a total known only once the work started
            progress.update(task, total=total)
        if not started:  # shown from the first progress on: a command that fails before prints no bar
            progress.start()
            started = True
        elapsed = max(time.perf_counter() - start, 1e-9)
        speed = f"{seconds_done / elapsed:.1f}x real time" if unit is None else ""
        progress.update(task, completed=seconds_done, speed=speed)

    try:
        yield update
    finally:
        if started:
            progress.stop()


def model_for_file(model: str | None, named: object, source: Path) -> str:
    """The weights to load for a codes or token file: ``model`` (``--model``) when given, else the known
    preset the file names (its hub id). A file never chooses other weights (a hub download of any repo
    name, a local path): those need ``--model``."""
    from ..weights import HUB_IDS

    if model:
        return model
    if isinstance(named, str) and named in HUB_IDS:
        return HUB_IDS[named]
    if isinstance(named, str) and named in HUB_IDS.values():
        return named
    presets = ", ".join(HUB_IDS)
    if not named:
        raise RvqkitError(f"{source} names no model; pass --model")
    raise RvqkitError(f"{source} names the model {named!r}, not a known preset ({presets}); pass --model")


def load_codec(model: str, device: str):
    """Load a codec with a spinner on stderr."""
    from ..codec import Codec
    from ..runtime import resolve_device
    from ..weights import RANDOM_WARNING, is_random_model

    device, why = resolve_device(device)
    if is_random_model(model):
        err.print(f"[bold yellow]{RANDOM_WARNING.upper()}[/] ({escape(model)}: for trying rvqkit out)")
    with err.status(f"Loading {escape(model)} ..."):
        codec = Codec.from_pretrained(model, device=device)
    announce_device(str(codec.device), why)
    return codec


def announce_device(device: str, why: str) -> None:
    """One dim line on stderr: the device the model runs on, how it was chosen (``why``, from
    :func:`rvqkit.runtime.resolve_device`) and, on CPU, torch's thread count."""
    n = torch_threads()
    threads = f", {n} CPU thread{'s' * (n != 1)}" if device.split(":")[0] == "cpu" else ""
    err.print(f"[dim]device {escape(device)} ({escape(why)}){threads}[/]", highlight=False)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def check_weights(recorded: object, codec: Any, source: Path, force: bool) -> None:
    """Refuse codes that record other weights (their sha256) than ``codec``'s, unless ``force``."""
    have = codec.weights_sha256
    if not recorded or not have or recorded == have:
        return
    if force:
        err.print(
            f"[yellow]warning:[/] {escape(str(source))} was made with other weights; decoding anyway (--force)"
        )
        return
    raise RvqkitError(
        f"{source} was made with other weights (sha256 {str(recorded)[:12]}...) than these "
        f"({have[:12]}...); give the same weights with --model, or pass --force to decode anyway"
    )


def check_input(path: Path) -> None:
    """Refuse an input that is not a readable file (missing, a folder, a symlink loop) before any work."""
    try:
        st = path.stat()
    except OSError as e:
        raise os_error(e, path, output=False) from e
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path} is a folder; give a file")
    if not os.access(path, os.R_OK):  # (opening it here would block on a FIFO)
        raise InputError(f"cannot read {path}: permission denied")


def check_output(path: Path, overwrite: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse an output file that cannot be written, before any work: a folder, an existing file without
    ``overwrite`` (a dangling or looping symlink counts as existing), the same file as an input, or a
    missing or read-only folder."""
    if os.path.isdir(path):
        raise OutputError(f"output {path} is a folder; give a file name")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    try:
        same = any(path.exists() and p.exists() and path.samefile(p) for p in inputs)
    except OSError as e:
        raise os_error(e, path, output=True) from e
    if same:
        raise OutputError(f"output {path} is the same file as an input")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: permission denied in {parent}")


def load_commands() -> None:
    """Import every command module of this package so that its commands register on ``app``."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


def main() -> None:
    tune_allocator()
    load_commands()
    app()
