"""Core codec commands: roundtrip, encode, decode, info."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..audio import audio_info
from ..errors import RvqkitError
from . import (
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    BandwidthOpt,
    DeviceOpt,
    FileModelOpt,
    ForceOpt,
    ModelOpt,
    OverwriteOpt,
    ThreadsOpt,
    app,
    check_input,
    check_output,
    check_weights,
    err,
    load_codec,
    model_for_file,
    progress_bar,
    user_errors,
)


def audio_seconds(path: Path) -> float:
    """Duration of an audio file in seconds (from its header), for the progress bar; refuses a file that
    is not readable audio, or whose rate is below ``rvqkit.audio.MIN_SAMPLE_RATE``, before any work."""
    info = audio_info(path)
    return info.frames / info.samplerate if info.samplerate else 0.0


@app.command()
@user_errors
def roundtrip(
    input: Annotated[Path, typer.Argument(help="Audio file (WAV, FLAC, OGG, MP3).")],
    output: Annotated[Path, typer.Argument(help="Reconstructed audio (.wav or .flac).")],
    model: ModelOpt = DEFAULT_MODEL,
    bandwidth: BandwidthOpt = 6.0,
    device: DeviceOpt = DEFAULT_DEVICE,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Encode and decode a file: hear what the codec keeps at a bandwidth (any length, bounded memory)."""
    from ..chunked import roundtrip_file

    check_output(output, overwrite, (input,))
    seconds = audio_seconds(input)
    codec = load_codec(model, device)
    codec.n_q_for(bandwidth)
    with progress_bar(f"roundtrip {bandwidth:g} kbps", seconds) as update:
        n = roundtrip_file(codec, input, output, bandwidth, overwrite=overwrite, progress=update)
    err.print(
        f"wrote {escape(str(output))} ({n / codec.sample_rate:.2f} s, {codec.sample_rate} Hz, {codec.channels} ch, {bandwidth:g} kbps)"
    )
    err.print(quality_line(codec, input, output), highlight=False)


METRIC_SECONDS = 600.0  # roundtrip scores at most this much audio (the metrics hold whole arrays)


def quality_line(codec, reference: Path, output: Path) -> str:
    """SI-SDR (dB) and log-mel distance (dB) of ``output`` against ``reference`` at the model's rate and
    channels (the input as the codec saw it), over at most :data:`METRIC_SECONDS`."""
    import numpy as np
    import soundfile as sf

    from ..chunked import read_blocks
    from ..eval.metrics import MetricSkipped, mel_distance, si_sdr

    limit = int(METRIC_SECONDS * codec.sample_rate)
    parts, have = [], 0
    for block in read_blocks(reference, codec):
        parts.append(block[:, : limit - have])
        have += parts[-1].shape[-1]
        if have >= limit:
            break
    ref = np.concatenate(parts, axis=-1)
    est = sf.read(output, frames=ref.shape[-1], dtype="float32", always_2d=True)[0].T
    ref = ref[:, : est.shape[-1]]
    scope = f" (first {METRIC_SECONDS:g} s)" if have >= limit else ""
    cells = []
    for label, fn in (
        ("SI-SDR", lambda: f"{si_sdr(ref, est):.2f} dB"),
        ("log-mel distance", lambda: f"{mel_distance(ref, est, codec.sample_rate):.2f} dB"),
    ):
        try:
            cells.append(f"{label} {fn()}")
        except MetricSkipped as e:
            cells.append(f"{label} skipped ({e})")
    return f"quality{scope}: " + ", ".join(cells)


@app.command()
@user_errors
def encode(
    input: Annotated[Path, typer.Argument(help="Audio file (WAV, FLAC, OGG, MP3).")],
    output: Annotated[Path, typer.Argument(help="Codes file to write (.npz, no pickle).")],
    model: ModelOpt = DEFAULT_MODEL,
    bandwidth: BandwidthOpt = 6.0,
    device: DeviceOpt = DEFAULT_DEVICE,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Encode an audio file to RVQ codes saved with their metadata (any length, bounded memory)."""
    from ..chunked import encode_file

    check_output(output, overwrite, (input,))
    seconds = audio_seconds(input)
    codec = load_codec(model, device)
    codec.n_q_for(bandwidth)
    with progress_bar(f"encode {bandwidth:g} kbps", seconds) as update:
        encoded = encode_file(codec, input, bandwidth, progress=update)
    encoded.save(output, overwrite=overwrite)
    err.print(
        f"wrote {escape(str(output))}: {encoded.n_q} codebooks x {int(encoded.frame_lengths[0])} frames ({codec.name})"
    )


@app.command()
@user_errors
def decode(
    input: Annotated[Path, typer.Argument(help="Codes file written by `rvqkit encode`.")],
    output: Annotated[Path, typer.Argument(help="Audio to write (.wav or .flac).")],
    model: FileModelOpt = None,
    n_q: Annotated[int | None, typer.Option("--n-q", help="Decode from the first K codebooks only.")] = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
    force: ForceOpt = False,
) -> None:
    """Decode a codes file to audio, optionally from the first K codebooks only (bounded memory)."""
    from ..chunked import decode_to_file
    from ..encoded import Encoded

    check_input(input)
    check_output(output, overwrite, (input,))
    encoded = Encoded.load(input)
    if encoded.batch_size != 1:
        raise RvqkitError(f"{input} holds {encoded.batch_size} items; the CLI decodes files of one item")
    codec = load_codec(model_for_file(model, encoded.model, input), device)
    codec.check_encoded(encoded)  # another model: that error first
    check_weights(encoded.weights_sha256, codec, input, force)
    n = int(encoded.lengths[0])
    with progress_bar("decode", n / codec.sample_rate) as update:
        decode_to_file(codec, encoded, output, n_q=n_q, overwrite=overwrite, progress=update)
    err.print(f"wrote {escape(str(output))} ({n / codec.sample_rate:.2f} s, {n_q or encoded.n_q} codebooks)")


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
