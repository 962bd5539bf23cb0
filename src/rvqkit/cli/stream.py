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
import soxr
import typer

from ..audio import check_resampled, check_sample_rate, convert_channels
from ..errors import AudioError, RvqkitError
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
_DTYPES: dict[PcmFormat, np.dtype] = {PcmFormat.s16le: np.dtype("<i2"), PcmFormat.f32le: np.dtype("<f4")}


def _to_float(raw: bytes, fmt: PcmFormat, channels: int) -> np.ndarray:
    x = np.frombuffer(raw, dtype=_DTYPES[fmt]).reshape(-1, channels).T
    x = x.astype(np.float32) / 32768.0 if fmt is PcmFormat.s16le else x.astype(np.float32)
    if not np.isfinite(x).all():
        raise AudioError("input PCM contains NaN or Inf samples")
    return x


def _from_float(audio: np.ndarray, fmt: PcmFormat) -> bytes:
    a = np.clip(audio, -1.0, 1.0).T
    if fmt is PcmFormat.s16le:
        return np.round(a * 32767.0).astype("<i2").tobytes()
    return a.astype("<f4").tobytes()


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
    resampler = (
        None
        if rate == codec.sample_rate
        else soxr.ResampleStream(rate, codec.sample_rate, codec.channels, dtype="float32")
    )
    frame_bytes = _DTYPES[pcm_format].itemsize * channels
    read_size = max(1, int(rate * chunk_ms / 1000)) * frame_bytes
    out = sys.stdout.buffer
    src: BinaryIO = sys.stdin.buffer if input == "-" else _open(input)
    pending = b""
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
            data = pending + raw
            usable = len(data) - len(data) % frame_bytes
            pending = data[usable:]
            x = _to_float(data[:usable], pcm_format, channels)
            samples_read += x.shape[-1]
            x = (
                convert_channels(x, codec.channels)
                if x.shape[-1]
                else np.zeros((codec.channels, 0), np.float32)
            )
            if resampler is not None:
                x = np.ascontiguousarray(resampler.resample_chunk(np.ascontiguousarray(x.T), last=last).T)
            if last:
                if pending:
                    err.print(f"warning: dropped {len(pending)} trailing bytes (not a whole sample frame)")
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
