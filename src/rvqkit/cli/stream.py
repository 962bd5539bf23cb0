"""``rvqkit stream``: raw PCM in (stdin or a file), codes or reconstructed PCM out (stdout), progressively,
so it can sit in a shell pipe between a recorder and a player."""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, BinaryIO

import numpy as np
import typer

from ..audio import check_resampled, check_sample_rate, convert_channels
from ..errors import AudioError, RvqkitError
from ..pcm import FrameSplitter, StreamResampler, float_to_pcm, frame_bytes, pcm_to_float
from . import (
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    BandwidthOpt,
    DeviceOpt,
    ModelOpt,
    ThreadsOpt,
    app,
    err,
    load_codec,
    user_errors,
)


class PcmFormat(str, Enum):
    s16le = "s16le"
    f32le = "f32le"


class CodesFormat(str, Enum):
    jsonl = "jsonl"
    raw = "raw"


MAX_CHUNK_MS = 5000.0


def _to_float(raw: bytes, fmt: PcmFormat, channels: int) -> np.ndarray:
    """Interleaved PCM as ``float32 [channels, samples]``; NaN or Inf is an :class:`AudioError`."""
    x = pcm_to_float(raw, fmt.value, channels)
    if not np.isfinite(x).all():
        raise AudioError("input PCM contains NaN or Inf samples")
    return x


def _from_float(audio: np.ndarray, fmt: PcmFormat) -> bytes:
    """``audio`` ``[channels, samples]`` clipped to ±1, as interleaved PCM."""
    return float_to_pcm(audio, fmt.value, clip=True)


@app.command()
@user_errors
def stream(
    input: Annotated[str, typer.Argument(help="Raw PCM file, or - for stdin.")] = "-",
    model: ModelOpt = DEFAULT_MODEL,
    bandwidth: BandwidthOpt = 6.0,
    rate: Annotated[
        int, typer.Option("--rate", help="Input sample rate in Hz (resampled to the model's).")
    ] = 24000,
    channels: Annotated[int, typer.Option("--channels", help="Input channels (interleaved).")] = 1,
    pcm_format: Annotated[
        PcmFormat, typer.Option("--format", help="Input (and output) PCM sample format.")
    ] = PcmFormat.s16le,
    chunk_ms: Annotated[float, typer.Option("--chunk-ms", help="Read size in milliseconds of input.")] = 20.0,
    realtime: Annotated[
        bool, typer.Option("--realtime", metavar="", help="Pace reading at the input's real-time rate.")
    ] = False,
    decode: Annotated[
        bool,
        typer.Option("--decode", metavar="", help="Write reconstructed PCM (model rate) instead of codes."),
    ] = False,
    codes_format: Annotated[
        CodesFormat,
        typer.Option(
            "--codes-format",
            help="jsonl: one JSON list of n_q codes per frame; raw: int16 little-endian, n_q per frame.",
        ),
    ] = CodesFormat.jsonl,
    device: DeviceOpt = DEFAULT_DEVICE,
    threads: ThreadsOpt = None,
) -> None:
    """Stream raw PCM through the codec: codes (or, with --decode, reconstructed PCM) on stdout as soon as final."""
    if rate <= 0 or channels <= 0 or chunk_ms <= 0:
        raise RvqkitError("--rate, --channels and --chunk-ms must be positive")
    check_sample_rate(rate, "--rate")
    if chunk_ms > MAX_CHUNK_MS:  # one read is one block through the model: keep it bounded
        raise RvqkitError(f"--chunk-ms must be at most {MAX_CHUNK_MS:g}, got {chunk_ms:g}")
    codec = load_codec(model, device)
    enc = codec.stream_encoder(bandwidth)
    dec = codec.stream_decoder() if decode else None
    resampler = StreamResampler(rate, codec.sample_rate, codec.channels)
    frames = FrameSplitter(frame_bytes(pcm_format.value, channels))
    read_size = max(1, int(rate * chunk_ms / 1000)) * frames.width
    out = sys.stdout.buffer
    src: BinaryIO = sys.stdin.buffer if input == "-" else _open(input)
    start = time.perf_counter()
    samples_read = 0

    def emit(packet, last: bool = False) -> None:
        if dec is not None:
            if last:
                dec.length = enc.samples_in
            out.write(_from_float(dec.push(packet)[0].numpy(), pcm_format))
            if last:
                out.write(_from_float(dec.flush()[0].numpy(), pcm_format))
        elif packet.num_frames:
            codes = packet.codes[0].t().numpy()  # [frames, n_q]
            if codes_format is CodesFormat.raw:
                out.write(codes.astype("<i2").tobytes())
            else:
                out.write("".join(json.dumps(row) + "\n" for row in codes.tolist()).encode())
        out.flush()

    try:
        while True:
            raw = src.read(read_size)
            last = not raw
            x = _to_float(frames.split(raw), pcm_format, channels)
            samples_read += x.shape[-1]
            x = (
                convert_channels(x, codec.channels)
                if x.shape[-1]
                else np.zeros((codec.channels, 0), np.float32)
            )
            x = resampler.process(x, last=last)
            if last:
                if frames.carry:
                    err.print(
                        f"warning: dropped {len(frames.carry)} trailing bytes (not a whole sample frame)"
                    )
                if enc.samples_in + x.shape[-1] == 0:
                    if samples_read:
                        check_resampled(samples_read, rate, codec.sample_rate, "the input")
                    raise AudioError("no audio on the input")
                emit(enc.flush(x), last=True)
                break
            emit(enc.push(x))
            if realtime:
                ahead = samples_read / rate - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        sys.stderr.close()
    finally:
        if src is not sys.stdin.buffer:
            src.close()


def _open(path: str) -> BinaryIO:
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such file")
    return open(p, "rb")  # noqa: SIM115 - closed in the command's finally
