"""``.ecdc`` commands (Meta's ``encodec`` file format): compress, decompress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import (
    DEFAULT_MODEL,
    BandwidthOpt,
    DeviceOpt,
    FileModelOpt,
    OverwriteOpt,
    app,
    check_output,
    err,
    load_codec,
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
    typer.Option(
        "--threads",
        min=1,
        help="torch CPU threads for the LM. LM-coded bytes depend on it: decode with the count the file "
        "was written with (Meta's tool uses torch's default, the core count; so does rvqkit by default).",
    ),
]


def _near(model: str) -> Path | None:
    """The local weights path (to look for the LM beside it), if ``model`` is one."""
    p = Path(model)
    return p if p.exists() else None


def _resolve_lm(lm_model: Path | None, model_name: str, model: str):
    from ..bitstream import resolve_lm

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
        typer.Option("--lm", help="Entropy-code with Meta's LM (smaller, slower; needs its checkpoint)."),
    ] = False,
    lm_model: LMModelOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = "cpu",
    overwrite: OverwriteOpt = False,
) -> None:
    """Compress audio to an .ecdc file, bit-compatible with Meta's `encodec` tool."""
    from ..atomic import write_atomic
    from ..audio import read_audio
    from ..bitstream import write_ecdc
    from ..lm import torch_threads

    check_output(output, overwrite, (input,))
    audio, sr = read_audio(input)
    codec = load_codec(model, device)
    codec.n_q_for(bandwidth)
    model_lm = _resolve_lm(lm_model, codec.name, model) if lm else None
    with err.status(f"Encoding {audio.shape[-1] / sr:.1f} s at {bandwidth:g} kbps ..."):
        encoded = codec.encode(audio, sr, bandwidth=bandwidth)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f, torch_threads(threads):
            write_ecdc(f, encoded, lm=model_lm)

    with err.status("Writing" + (" (entropy coding)" if lm else "") + " ..."):
        write_atomic(output, write)  # a failed or killed run never leaves a truncated .ecdc
    seconds = int(encoded.lengths[0]) / codec.sample_rate
    size = output.stat().st_size
    err.print(
        f"wrote {output}: {size} bytes, {8 * size / 1000 / seconds:.2f} kbps ({codec.name}, {encoded.n_q} codebooks)"
    )


@app.command()
@user_errors
def decompress(
    input: Annotated[Path, typer.Argument(help=".ecdc file (from rvqkit or Meta's encodec tool).")],
    output: Annotated[Path, typer.Argument(help="Audio to write (.wav or .flac).")],
    model: FileModelOpt = None,
    lm_model: LMModelOpt = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = "cpu",
    overwrite: OverwriteOpt = False,
) -> None:
    """Decompress an .ecdc file to audio; the model is the one its metadata names."""
    from ..audio import write_audio
    from ..bitstream import BitstreamError, read_ecdc, read_header
    from ..lm import torch_threads
    from ..weights import HUB_IDS

    check_output(output, overwrite, (input,))
    try:
        f = open(input, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise BitstreamError(f"cannot open {input}: {e.strerror}") from None
    with f:
        header, raw = read_header(f)
        source = model or HUB_IDS.get(header.model, header.model)
        codec = load_codec(source, device)
        if codec.name != header.model:
            raise BitstreamError(f"{input} was made by {header.model}; the model given is {codec.name}")
        model_lm = _resolve_lm(lm_model, header.model, source) if header.use_lm else None
        status = err.status("Reading" + (" (entropy decoding)" if header.use_lm else "") + " ...")
        with status, torch_threads(threads):
            encoded = read_ecdc(f, lm=model_lm, already_read=raw)
    with err.status("Decoding ..."):
        out = codec.decode(encoded)
    n = int(encoded.lengths[0])
    write_audio(output, out[0, :, :n].cpu().numpy(), codec.sample_rate, overwrite=overwrite)
    err.print(
        f"wrote {output} ({n / codec.sample_rate:.2f} s, {codec.sample_rate} Hz, {encoded.n_q} codebooks)"
    )
