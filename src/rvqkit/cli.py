"""The ``rvqkit`` command line: roundtrip, encode, decode, info.

Every error about the user's input is one line on stderr and exit status 1 (2 for bad arguments, as
click does); set ``RVQKIT_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from .errors import RvqkitError

F = TypeVar("F", bound=Callable[..., Any])
app = typer.Typer(
    name="rvqkit",
    help="Neural audio compression with EnCodec: encode, decode and inspect RVQ codes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, soft_wrap=True)

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar="RVQKIT_MODEL",
        help="Hub id, Hugging Face model folder or Meta .th checkpoint.",
    ),
]
BandwidthOpt = Annotated[float, typer.Option("--bandwidth", "-b", help="Target bandwidth in kbps.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device: cpu, cuda, cuda:1 ...")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the output file if it exists.")]
DEFAULT_MODEL = "facebook/encodec_24khz"


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def user_errors(fn: F) -> F:
    """Turn rvqkit's errors (and anything unexpected) into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RvqkitError as e:
            _fail(str(e))
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if os.environ.get("RVQKIT_DEBUG"):
                raise
            _fail(f"unexpected {type(e).__name__}: {e} (set RVQKIT_DEBUG=1 for the traceback)")

    return wrapper  # type: ignore[return-value]


def _load(model: str, device: str):
    from .codec import Codec

    with err.status(f"Loading {model} ..."):
        return Codec.from_pretrained(model, device=device)


def _check_output(path: Path, overwrite: bool, inputs: tuple[Path, ...] = ()) -> None:
    if any(path.resolve() == p.resolve() for p in inputs):
        raise RvqkitError(f"output {path} is the same file as an input")
    if path.exists() and not overwrite:
        raise RvqkitError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.exists():
        raise RvqkitError(f"output folder {path.parent} does not exist")


@app.command()
@user_errors
def roundtrip(
    input: Annotated[Path, typer.Argument(help="Audio file (WAV, FLAC, OGG, MP3).")],
    output: Annotated[Path, typer.Argument(help="Reconstructed audio (.wav or .flac).")],
    model: ModelOpt = DEFAULT_MODEL,
    bandwidth: BandwidthOpt = 6.0,
    device: DeviceOpt = "cpu",
    overwrite: OverwriteOpt = False,
) -> None:
    """Encode and decode a file: hear what the codec keeps at a bandwidth."""
    from .audio import read_audio, write_audio

    _check_output(output, overwrite, (input,))
    audio, sr = read_audio(input)
    codec = _load(model, device)
    codec.n_q_for(bandwidth)
    with err.status(f"Encoding and decoding {audio.shape[-1] / sr:.1f} s at {bandwidth:g} kbps ..."):
        out = codec.decode(codec.encode(audio, sr, bandwidth=bandwidth))
    write_audio(output, out[0].cpu().numpy(), codec.sample_rate, overwrite=overwrite)
    err.print(f"wrote {output} ({codec.sample_rate} Hz, {codec.channels} ch, {bandwidth:g} kbps)")


@app.command()
@user_errors
def encode(
    input: Annotated[Path, typer.Argument(help="Audio file (WAV, FLAC, OGG, MP3).")],
    output: Annotated[Path, typer.Argument(help="Codes file to write (.npz, no pickle).")],
    model: ModelOpt = DEFAULT_MODEL,
    bandwidth: BandwidthOpt = 6.0,
    device: DeviceOpt = "cpu",
    overwrite: OverwriteOpt = False,
) -> None:
    """Encode an audio file to RVQ codes saved with their metadata."""
    from .audio import read_audio

    _check_output(output, overwrite, (input,))
    audio, sr = read_audio(input)
    codec = _load(model, device)
    codec.n_q_for(bandwidth)
    with err.status(f"Encoding {audio.shape[-1] / sr:.1f} s at {bandwidth:g} kbps ..."):
        encoded = codec.encode(audio, sr, bandwidth=bandwidth)
    encoded.save(output, overwrite=overwrite)
    err.print(
        f"wrote {output}: {encoded.n_q} codebooks x {int(encoded.frame_lengths[0])} frames ({codec.name})"
    )


@app.command()
@user_errors
def decode(
    input: Annotated[Path, typer.Argument(help="Codes file written by `rvqkit encode`.")],
    output: Annotated[Path, typer.Argument(help="Audio to write (.wav or .flac).")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", envvar="RVQKIT_MODEL", help="Weights; default: the hub model named in the file."
        ),
    ] = None,
    n_q: Annotated[int | None, typer.Option("--n-q", help="Decode from the first K codebooks only.")] = None,
    device: DeviceOpt = "cpu",
    overwrite: OverwriteOpt = False,
) -> None:
    """Decode a codes file to audio, optionally from the first K codebooks only."""
    from .audio import write_audio
    from .encoded import Encoded
    from .weights import HUB_IDS

    _check_output(output, overwrite, (input,))
    encoded = Encoded.load(input)
    codec = _load(model or HUB_IDS.get(encoded.model, encoded.model), device)
    with err.status("Decoding ..."):
        out = codec.decode(encoded, n_q=n_q)
    n = int(encoded.lengths[0])
    write_audio(output, out[0, :, :n].cpu().numpy(), codec.sample_rate, overwrite=overwrite)
    err.print(f"wrote {output} ({n / codec.sample_rate:.2f} s, {n_q or encoded.n_q} codebooks)")


@app.command()
@user_errors
def info(model: ModelOpt = DEFAULT_MODEL) -> None:
    """Print the model's facts: rates, bandwidths, codebooks, parameters."""
    codec = _load(model, "cpu")
    cfg = codec.config
    rows = [
        ("model", codec.name),
        ("weights sha256", codec.weights_sha256 or "-"),
        ("sample rate", f"{codec.sample_rate} Hz"),
        ("channels", str(codec.channels)),
        ("frame rate", f"{codec.frame_rate} frames/s (hop {codec.hop_length} samples)"),
        ("bandwidths", ", ".join(f"{b:g} kbps ({codec.n_q_for(b)} codebooks)" for b in codec.bandwidths)),
        ("codebooks", f"{codec.num_codebooks} x {codec.codebook_size} entries x {cfg.hidden_size} dims"),
        ("causal", str(cfg.use_causal_conv)),
        (
            "segments",
            f"{cfg.segment_length} samples, stride {cfg.segment_stride}"
            if cfg.segment_length
            else "whole signal",
        ),
        (
            "parameters",
            f"{codec.num_parameters() / 1e6:.2f} M (+{codec.model.quantizer.codebooks.numel() / 1e6:.2f} M codebook entries)",
        ),
    ]
    out = Console(soft_wrap=True)
    for k, v in rows:
        out.print(f"{k:>15}: {v}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
