"""Files of any length in bounded memory: read audio progressively, convert and resample it block by
block, run it through the streaming engine, and write audio progressively.

Blocks are large (5 s by default) and the last block is always given to the encoder together with the
end of the signal, so every layer works on wide tensors as the whole-file computation does; memory
stays at a few blocks whatever the file's length.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import soxr
import torch

from .audio import AudioWriter, check_finite, check_resampled, convert_channels, open_audio
from .codec import Codec
from .encoded import Encoded
from .errors import AudioError
from .framing import segment_frames
from .stream import CodePacket

Progress = Callable[[float], None]  # called with seconds of input audio done
DEFAULT_BLOCK_SECONDS = 5.0  # ~0.8 GB peak RSS for the 24 kHz model on CPU; 10 s blocks take ~1.1 GB
# Frames per decoder call when decoding to a file: 2 s at 75 Hz, the width of the engine's regular decode
# feeds. 600 s of 24 kHz codes through `rvqkit decode`: peak 521 MB RSS at 150 frames, 751 MB at 375 (5 s),
# 426 MB at 75 (1 s, about a third slower); widths round differently by 1 LSB on 0.25 % of 16-bit samples.
DECODE_BLOCK_FRAMES = 150
MAX_BLOCK_VALUES = 1 << 22  # samples x channels read from a file at once (16 MB of float32)
#: libsndfile formats whose header gives the exact length in samples
EXACT_LENGTH_FORMATS = frozenset({"WAV", "WAVEX", "W64", "RF64", "FLAC", "AIFF", "CAF", "AU"})


def read_blocks(
    path: str | os.PathLike[str], codec: Codec, block_seconds: float = DEFAULT_BLOCK_SECONDS
) -> Iterator[np.ndarray]:
    """Yield float32 ``[channels, n]`` blocks of ``path`` at the model's rate and channel count, each at
    most ``block_seconds`` of model-rate audio (whatever the file's rate, channel count or length).

    The file's rate must be at least :data:`~rvqkit.audio.MIN_SAMPLE_RATE`, and it must give at least one
    sample at the model's rate (checked from the header before any work, and again at the end).
    Resampling is soxr's streaming resampler, which gives the same samples as resampling the whole
    file; at high ratios it returns its output in bursts, which are cut to the block size here.
    """
    out_block = max(1, int(block_seconds * codec.sample_rate))
    with open_audio(path) as f:
        sr = int(f.samplerate)
        if f.frames > 0:  # the header's count (exact for WAV/FLAC): refuse what would resample to nothing
            check_resampled(f.frames, sr, codec.sample_rate, str(path))
        block = max(1, min(int(block_seconds * sr), MAX_BLOCK_VALUES // max(1, f.channels)))
        resampler = (
            None
            if sr == codec.sample_rate
            else soxr.ResampleStream(sr, codec.sample_rate, codec.channels, dtype="float32", quality="HQ")
        )
        total_in = total_out = 0
        while True:
            try:
                data = f.read(block, dtype="float32", always_2d=True)
            except Exception as e:  # libsndfile errors on a damaged file mid-way
                raise AudioError(f"{path}: cannot read audio ({e})") from e
            last = data.shape[0] < block or f.tell() >= f.frames
            total_in += data.shape[0]
            x = np.ascontiguousarray(data.T)
            if x.shape[-1]:
                check_finite(x, str(path))
            x = convert_channels(x, codec.channels)
            if resampler is not None:
                x = np.ascontiguousarray(resampler.resample_chunk(np.ascontiguousarray(x.T), last=last).T)
            for i in range(0, x.shape[-1], out_block):
                total_out += x[:, i : i + out_block].shape[-1]
                yield x[:, i : i + out_block]
            if last:
                break
    if total_in == 0:
        raise AudioError(f"{path} is empty (0 samples)")
    if total_out == 0:
        check_resampled(total_in, sr, codec.sample_rate, str(path))
        raise AudioError(f"{path} gives 0 samples at {codec.sample_rate} Hz")


def model_length(path: str | os.PathLike[str], codec: Codec) -> int:
    """Samples ``path`` gives at the model's rate (what :func:`read_blocks` yields in all), from the
    header where it is exact (WAV, FLAC, AIFF ...), else by decoding the file once (bounded memory)."""
    with open_audio(path) as f:
        sr, frames, fmt = int(f.samplerate), f.frames, f.format
        if fmt not in EXACT_LENGTH_FORMATS or frames <= 0:
            frames = 0
            try:
                for b in f.blocks(blocksize=max(1, MAX_BLOCK_VALUES // max(1, f.channels)), dtype="float32"):
                    frames += len(b)
            except Exception as e:
                raise AudioError(f"{path}: cannot read audio ({e})") from e
    if frames == 0:
        raise AudioError(f"{path} is empty (0 samples)")
    return check_resampled(frames, sr, codec.sample_rate, str(path))


def _lookahead(blocks: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, bool]]:
    """(block, is_last) pairs."""
    prev = next(blocks, None)
    for block in blocks:
        assert prev is not None
        yield prev, False
        prev = block
    if prev is not None:
        yield prev, True


def _encode_packets(
    codec: Codec, blocks: Iterator[np.ndarray], bandwidth: float, progress: Progress | None
) -> Iterator[tuple[CodePacket, int, bool]]:
    """(packet, samples read so far, is_last) for each block, the last given with the end of signal."""
    # Fed by the engine's rule in 1 s feeds (the batched engine's step), whatever the blocks: the codes are
    # those of the engine at that step, and Codec.encode's (2 s feeds; feeds of 0.8 s and wider give the
    # same floats: tests/test_blocked.py, tests/test_chunked.py). 1 s keeps the peak low: 103 MB above the
    # loaded model for a 20 s file in 2 s blocks, against 224 MB with 2 s feeds (final feeds up to 4 s).
    enc = codec.stream_encoder(bandwidth, step=codec.model.step_samples(2) or None)
    for block, last in _lookahead(blocks):
        packet = enc.flush(block) if last else enc.push(block)
        if progress:
            progress(enc.samples_in / codec.sample_rate)
        yield packet, enc.samples_in, last


def encode_file(
    codec: Codec,
    path: str | os.PathLike[str],
    bandwidth: float,
    progress: Progress | None = None,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    codes_dtype: torch.dtype = torch.int64,
) -> Encoded:
    """Encode a file of any length chunk by chunk; the result equals ``codec.encode`` of the whole file.

    ``codes_dtype=torch.int16`` keeps the codes at 2 bytes each, the codes file's own dtype, for a result
    that only goes to :meth:`Encoded.save` (``rvqkit encode``): 24 h at 6 kbps then peaks at 2 x 104 MB of
    codes instead of 104 MB + 415 MB + the 104 MB copy that saving int64 codes makes. Decode and tokens
    want the default int64."""
    if codes_dtype not in (torch.int16, torch.int64):
        raise ValueError(f"codes_dtype must be torch.int16 or torch.int64, got {codes_dtype}")
    codec.n_q_for(bandwidth)
    codes, scales, length = [], [], 0
    for packet, samples_in, _ in _encode_packets(
        codec, read_blocks(path, codec, block_seconds), bandwidth, progress
    ):
        codes.append(packet.codes.to(torch.int16))  # 2 bytes a code while the file is read
        if packet.scales is not None:
            scales.append(packet.scales)
        length = samples_in
    # Widened to Encoded's int64 only once the int16 pieces are freed: at 24 h and 6 kbps the pieces hold
    # 104 MB and the result 415 MB, so the peak is their sum once, not the pieces twice over.
    joined = torch.cat(codes, dim=-1)
    codes.clear()
    all_codes = joined.to(codes_dtype)
    del joined
    return codec.wrap_codes(
        all_codes, torch.cat(scales, dim=-1) if scales else None, [length], [all_codes.shape[-1]]
    )


def _packets_of(
    codec: Codec, encoded: Encoded, index: int, n_q: int, block_frames: int
) -> Iterator[CodePacket]:
    """Packets of one item's codes: blocks of frames (24 kHz) or whole segments (48 kHz)."""
    length = int(encoded.lengths[index])
    codes = encoded.codes[index : index + 1, :n_q, : int(encoded.frame_lengths[index])]
    if codec.config.segment_length is None:
        for f in range(0, codes.shape[-1], block_frames):
            yield CodePacket(codes[..., f : f + block_frames])
        return
    assert encoded.scales is not None
    f0 = 0
    for i, nf in enumerate(segment_frames(codec.config, length)):
        yield CodePacket(codes[..., f0 : f0 + nf], encoded.scales[index : index + 1, i : i + 1], [nf])
        f0 += nf


def decode_to_file(
    codec: Codec,
    encoded: Encoded,
    out: str | os.PathLike[str],
    n_q: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    block_frames: int = DECODE_BLOCK_FRAMES,
) -> int:
    """Decode item 0 of ``encoded`` to ``out`` block by block; returns the samples written."""
    codec.check_encoded(encoded)
    n_q = encoded.n_q if n_q is None else n_q
    if not 1 <= n_q <= encoded.n_q:
        from .errors import BandwidthError

        raise BandwidthError(
            f"n_q must be between 1 and {encoded.n_q} (the codebooks the codes hold), got {n_q}"
        )
    length = int(encoded.lengths[0])
    dec = codec.stream_decoder(length=length)
    with AudioWriter(out, codec.sample_rate, codec.channels, overwrite) as w:
        for packet in _packets_of(codec, encoded, 0, n_q, block_frames):
            w.write(dec.push(packet)[0])
            if progress:
                progress(dec.samples_out / codec.sample_rate)
        w.write(dec.flush()[0])
    return dec.samples_out


def roundtrip_file(
    codec: Codec,
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    bandwidth: float,
    overwrite: bool = False,
    progress: Progress | None = None,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
) -> int:
    """Encode and decode a file of any length in one pass, writing the reconstruction progressively."""
    codec.n_q_for(bandwidth)
    dec = codec.stream_decoder()
    with AudioWriter(out, codec.sample_rate, codec.channels, overwrite) as w:
        for packet, samples_in, last in _encode_packets(
            codec, read_blocks(path, codec, block_seconds), bandwidth, progress
        ):
            if last:  # only the end's frames reach past the signal: trim them to its length
                dec.length = samples_in
            w.write(dec.push(packet)[0])
        w.write(dec.flush()[0])
    return dec.samples_out
