"""Core codec commands: roundtrip, encode, decode, info."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import (
    DEFAULT_MODEL,
    BandwidthOpt,
    DeviceOpt,
    ModelOpt,
    OverwriteOpt,
    app,
    check_output,
    err,
    load_codec,
    user_errors,
)


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
    from ..audio import read_audio, write_audio

    check_output(output, overwrite, (input,))
    audio, sr = read_audio(input)
    codec = load_codec(model, device)
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
    from ..audio import read_audio

    check_output(output, overwrite, (input,))
    audio, sr = read_audio(input)
    codec = load_codec(model, device)
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
    from ..audio import write_audio
    from ..encoded import Encoded
    from ..weights import HUB_IDS

    check_output(output, overwrite, (input,))
    encoded = Encoded.load(input)
    codec = load_codec(model or HUB_IDS.get(encoded.model, encoded.model), device)
    with err.status("Decoding ..."):
        out = codec.decode(encoded, n_q=n_q)
    n = int(encoded.lengths[0])
    write_audio(output, out[0, :, :n].cpu().numpy(), codec.sample_rate, overwrite=overwrite)
    err.print(f"wrote {output} ({n / codec.sample_rate:.2f} s, {n_q or encoded.n_q} codebooks)")


@app.command()
@user_errors
def info(model: ModelOpt = DEFAULT_MODEL) -> None:
    """Print the model's facts: rates, bandwidths, codebooks, parameters."""
    codec = load_codec(model, "cpu")
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
