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
    with progress_bar("scoring", n / codec.sample_rate) as update:
        line = quality_line(codec, input, output, progress=update)
    err.print(line, highlight=False)


def quality_line(codec, reference: Path, output: Path, progress=None) -> str:
    """SI-SDR (dB) and log-mel distance (dB) of ``output`` against ``reference`` at the model's rate and
    channels (the input as the codec saw it), over the whole file, block by block (memory bounded
    whatever the length: :mod:`rvqkit.eval.streaming`). ``progress`` gets the seconds scored."""
    import soundfile as sf

    from ..chunked import read_blocks
    from ..eval.metrics import MetricSkipped
    from ..eval.streaming import BlockScores

    scores = BlockScores(codec.sample_rate, ("si_sdr", "mel_distance"))
    with sf.SoundFile(output) as out:
        for ref in read_blocks(reference, codec):
            est = out.read(ref.shape[-1], dtype="float32", always_2d=True).T
            if est.shape[-1] < ref.shape[-1]:  # (the output is as long as the input; never shorter)
                ref = ref[:, : est.shape[-1]]
            scores.update(ref, est)
            if progress:
                progress(scores.samples / codec.sample_rate)
            if est.shape[-1] == 0:
                break
    cells = []
    for label, value in zip(("SI-SDR", "log-mel distance"), scores.results().values(), strict=True):
        if isinstance(value, MetricSkipped):
            cells.append(f"{label} skipped ({value})")
        else:
            cells.append(f"{label} {value:.2f} dB")
    return "quality: " + ", ".join(cells)


@app.command()
@user_errors
def encode(
    ctx: typer.Context,
    input: Annotated[Path, typer.Argument(help="Audio file (WAV, FLAC, OGG, MP3).")],
    output: Annotated[Path, typer.Argument(help="Codes file to write (.npz, no pickle).")],
    model: ModelOpt = DEFAULT_MODEL,
    bandwidth: BandwidthOpt = 6.0,
    device: DeviceOpt = DEFAULT_DEVICE,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Encode an audio file to RVQ codes saved with their metadata (any length, bounded memory).

    Mimi, DAC and SNAC models: files up to 10 minutes, read whole; all codebooks unless -b is given."""
    import torch

    from ..chunked import encode_file
    from .family import encode_family, model_family, option_given

    if model_family(model) is not None:  # Mimi, DAC, SNAC: docs/families.md
        given = option_given(ctx, "bandwidth")  # families default to all codebooks
        return encode_family(input, output, model, bandwidth if given else None, device, overwrite)
    check_output(output, overwrite, (input,))
    seconds = audio_seconds(input)
    codec = load_codec(model, device)
    codec.n_q_for(bandwidth)
    with progress_bar(f"encode {bandwidth:g} kbps", seconds) as update:
        # int16 codes: the file's dtype, a quarter of int64's memory on long files
        encoded = encode_file(codec, input, bandwidth, progress=update, codes_dtype=torch.int16)
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
    from ..family_codes import is_family_codes_file
    from .family import decode_family

    if is_family_codes_file(input):  # Mimi, DAC, SNAC codes: docs/families.md
        return decode_family(input, output, model, n_q, device, overwrite)
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
