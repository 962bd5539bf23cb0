"""``.ecdc`` commands (Meta's ``encodec`` file format): compress, decompress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from . import (
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    BandwidthOpt,
    DeviceOpt,
    FileModelOpt,
    OverwriteOpt,
    app,
    check_input,
    check_output,
    err,
    load_codec,
    progress_bar,
    threads_option,
    user_errors,
)

LMModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--lm-model",
        envvar="RVQKIT_LM_MODEL",
        help="Meta's LM checkpoint (encodec_lm_24khz-1608e3c0.th / encodec_lm_48khz-7add9fc3.th); "
        "default: looked for beside --model, in $RVQKIT_LM_DIR, then in torch's hub cache.",
    ),
]


ThreadsOpt = Annotated[
    int | None,
    threads_option(
        " LM-coded bytes depend on it: decode with the count the file was written with (Meta's tool uses"
        " torch's default, the machine's physical cores)."
    ),
]


def _near(model: str) -> Path | None:
    """The local weights path (to look for the LM beside it), if ``model`` is one."""
    p = Path(model)
    return p if p.exists() else None


def _resolve_lm(lm_model: Path | None, model_name: str, model: str):
    from ..compress import resolve_lm

    with err.status("Loading the entropy-coding LM ..."):
        return resolve_lm(lm_model, model_name, near=_near(model))


@app.command()
@user_errors
def compress(
    input: Annotated[Path, typer.Argument(help="Audio file (WAV, FLAC, OGG, MP3).")],
    output: Annotated[Path, typer.Argument(help=".ecdc file to write (opens in Meta's encodec tool).")],
    model: Annotated[
        str,
        typer.Option("--model", "-m", envvar="RVQKIT_MODEL", help="Hub id, model folder or Meta .th file."),
    ] = DEFAULT_MODEL,
    bandwidth: BandwidthOpt = 6.0,
    lm: Annotated[
        bool,
        typer.Option(
            "--lm", metavar="", help="Entropy-code with Meta's LM (smaller, slower; needs its checkpoint)."
        ),
    ] = False,
    lm_model: LMModelOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    overwrite: OverwriteOpt = False,
) -> None:
    """Compress audio to an .ecdc file, bit-compatible with Meta's `encodec` tool (any length, bounded
    memory: the file is read, encoded and written block by block)."""
    from ..compress import compress_path
    from .codec import audio_seconds

    check_output(output, overwrite, (input,))
    seconds = audio_seconds(input)
    codec = load_codec(model, device)
    n_q = codec.n_q_for(bandwidth)
    model_lm = _resolve_lm(lm_model, codec.name, model) if lm else None
    label = f"compress {bandwidth:g} kbps" + (" (LM)" if lm else "")
    with progress_bar(label, seconds) as update:
        length = compress_path(codec, input, output, bandwidth, model_lm, threads, progress=update)
    size = output.stat().st_size
    err.print(
        f"wrote {escape(str(output))}: {size} bytes, {8 * size / 1000 / (length / codec.sample_rate):.2f} kbps "
        f"({codec.name}, {n_q} codebooks)"
    )


@app.command()
@user_errors
def decompress(
    input: Annotated[Path, typer.Argument(help=".ecdc file (from rvqkit or Meta's encodec tool).")],
    output: Annotated[Path, typer.Argument(help="Audio to write (.wav or .flac).")],
    model: FileModelOpt = None,
    lm_model: LMModelOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    overwrite: OverwriteOpt = False,
) -> None:
    """Decompress an .ecdc file to audio; the model is the one its metadata names (any length, bounded
    memory: read, decoded and written block by block)."""
    from ..compress import check_model, decompress_path, ecdc_header
    from ..weights import HUB_IDS

    check_input(input)
    check_output(output, overwrite, (input,))
    header = ecdc_header(input)
    source = model or HUB_IDS.get(header.model, header.model)
    codec = load_codec(source, device)
    check_model(header, codec, str(input))
    model_lm = _resolve_lm(lm_model, header.model, source) if header.use_lm else None
    label = "decompress" + (" (LM)" if header.use_lm else "")
    with progress_bar(label, header.audio_length / codec.sample_rate) as update:
        header, n = decompress_path(input, output, codec, model_lm, threads, overwrite, progress=update)
    err.print(
        f"wrote {escape(str(output))} ({n / codec.sample_rate:.2f} s, {codec.sample_rate} Hz, "
        f"{header.n_q} codebooks)"
    )
