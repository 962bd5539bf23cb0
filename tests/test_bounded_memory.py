"""The CLI's memory is bounded whatever the input's length or rate: the model sees blocks of bounded size
(also at the worst remaining resampling ratio, 4 kHz to 48 kHz), ``compress``/``decompress`` go block by
block and give the whole-file bytes and samples, and a subprocess's peak RSS does not grow with the
input's length. (24 h runs: ``python benchmarks/cli_memory.py --hours 24``.)"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import make_signal

from rvqkit import Codec
from rvqkit.audio import MIN_SAMPLE_RATE, resampled_length
from rvqkit.bitstream import compress, compress_file, decompress, decompress_file, read_header
from rvqkit.chunked import read_blocks
from rvqkit.stream import StreamDecoder, StreamEncoder


@pytest.fixture(scope="module", params=["24", "48"])
def codec(request):
    _, path = request.getfixturevalue(f"meta_{request.param}k")
    return Codec.from_pretrained(path)


def test_low_rate_blocks_stay_bounded(codec48, tmp_path):
    """4 kHz to 48 kHz (12x, the worst ratio the minimum rate leaves): soxr gives its output in bursts;
    every block handed on is at most ``block_seconds`` at the model rate, and they add up to the whole
    file's resampling exactly."""
    path = tmp_path / "low.wav"
    n = 20 * MIN_SAMPLE_RATE + 7
    x = make_signal(n, 1, MIN_SAMPLE_RATE, seed=3)
    sf.write(path, x.T, MIN_SAMPLE_RATE, subtype="FLOAT")
    block_seconds = 0.05  # 2400 samples at 48 kHz: smaller than soxr's bursts, so they must be cut
    blocks = list(read_blocks(path, codec48, block_seconds=block_seconds))
    cap = int(block_seconds * codec48.sample_rate)
    assert max(b.shape[-1] for b in blocks) == cap
    whole = soxr.resample(np.repeat(x, 2, axis=0).T, MIN_SAMPLE_RATE, 48000, quality="HQ").T
    got = np.concatenate(blocks, axis=-1)
    assert got.shape[-1] == whole.shape[-1] == resampled_length(n, MIN_SAMPLE_RATE, 48000)
    assert np.array_equal(got, whole)


def test_model_sees_bounded_blocks(codec, tmp_path, monkeypatch):
    """What ``compress``/``decompress`` give the stream encoder and decoder is bounded by the block size
    (5 s of audio; 375 frames), and never the whole file."""
    path = tmp_path / "in.wav"
    sr = 8000
    sf.write(path, make_signal(12 * sr, 1, sr, seed=5).T, sr, subtype="PCM_16")
    seen_in: list[int] = []
    seen_codes: list[int] = []
    push, flush, dpush = StreamEncoder.push, StreamEncoder.flush, StreamDecoder.push
    monkeypatch.setattr(
        StreamEncoder, "push", lambda self, a: (seen_in.append(a.shape[-1]), push(self, a))[1]
    )
    monkeypatch.setattr(
        StreamEncoder, "flush", lambda self, a=None: (seen_in.append(a.shape[-1]), flush(self, a))[1]
    )
    monkeypatch.setattr(
        StreamDecoder, "push", lambda self, p: (seen_codes.append(p.codes.shape[-1]), dpush(self, p))[1]
    )
    buf = io.BytesIO()
    length = compress_file(buf, codec, path, 3.0, block_seconds=1.0)
    assert length == resampled_length(12 * sr, sr, codec.sample_rate)
    assert len(seen_in) >= 12 and max(seen_in) <= codec.sample_rate  # 1 s blocks
    buf.seek(0)
    decompress_file(buf, codec, tmp_path / "out.wav", block_frames=50)
    frames_per_segment = -(-(codec.config.segment_length or 0) // codec.hop_length)
    assert len(seen_codes) >= 12 and max(seen_codes) <= max(50, frames_per_segment)


def test_block_compress_decompress_equal_whole_file(codec, tmp_path):
    """The block-by-block ``.ecdc`` bytes are the whole-signal ``compress``'s, and the decoded audio is
    ``decompress``'s (to 16-bit output)."""
    path = tmp_path / "in.wav"
    x = make_signal(int(3.4 * 44100) + 3, 2, 44100, seed=8)
    sf.write(path, x.T, 44100, subtype="FLOAT")
    buf = io.BytesIO()
    compress_file(buf, codec, path, 6.0, block_seconds=1.0)
    assert buf.getvalue() == compress(codec, x, 44100, 6.0)
    ref, _ = decompress(buf.getvalue(), codec)
    buf.seek(0)
    out = tmp_path / "out.wav"
    n = decompress_file(buf, codec, out, block_frames=40)
    got, sr = sf.read(out, dtype="float32", always_2d=True)
    assert sr == codec.sample_rate and n == ref.shape[-1] == got.shape[0]
    assert np.abs(got - np.clip(ref.numpy(), -1, 1).T).max() <= 1.5 / 32768


#: runs the CLI with the model's work replaced by zeros of the right shapes (frames as the real stream
#: gives them), so that a long input runs in seconds; everything else (reading, resampling, blocks,
#: .ecdc and WAV writing) is the real code. Prints on stdout how far (MB) the peak RSS of the work rose
#: above the RSS once the model was loaded (Linux: VmHWM, restarted through /proc/self/clear_refs).
CHEAP_CLI = """
import resource, sys
import torch
from rvqkit import stream

def frames(self, x, final):
    hop = self.codec.hop_length
    n = -(-self.samples_in // hop) if final else self.samples_in // hop
    k, self.frames_out = n - self.frames_out, n
    return stream.CodePacket(torch.zeros(self.batch_size, self.n_q, k, dtype=torch.long))

def push(self, packet):
    n = packet.codes.shape[-1] * self.codec.hop_length
    return self._emit(torch.zeros(self.batch_size, self.codec.channels, n))

def flush(self, length=None):
    self.finished = True
    return torch.zeros(self.batch_size, self.codec.channels, 0)

def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

def load_codec(*args, **kwargs):
    codec = real_load(*args, **kwargs)
    with open("/proc/self/clear_refs", "w") as f:  # restart the peak (VmHWM) here: the work's peak
        f.write("5")
    loaded.append(vm("VmRSS"))
    return codec

stream.StreamEncoder._feed = frames  # the model step replaced (StreamEncoder._feed runs it)
stream.StreamDecoder.push = push
stream.StreamDecoder.flush = flush
import rvqkit.cli as cli
real_load, loaded = cli.load_codec, []
cli.load_codec = load_codec
sys.argv = ["rvqkit", *sys.argv[1:]]
try:
    cli.main()
except SystemExit as e:
    if e.code:
        raise
print(vm("VmHWM") - loaded[0])
"""


def _work_rss_mb(args: list[str]) -> float:
    """Peak RSS growth in MB of ``rvqkit ARGS`` (with the cheap model) after loading the model."""
    res = subprocess.run([sys.executable, "-c", CHEAP_CLI, *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return float(res.stdout.strip().splitlines()[-1])


def _silent_flac(path, seconds: int, sr: int) -> None:
    with sf.SoundFile(path, "w", sr, 1, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((60 * sr, 1), np.float32)
        for _ in range(seconds // 60):
            f.write(block)


def test_cli_rss_does_not_grow_with_length(meta_24k, tmp_path):
    """The memory ``compress`` and ``decompress`` use past loading the model is under 100 MB and no more
    for 40 min of silent 44.1 kHz FLAC than for 2 min, within 30 MB (the 40 min at 24 kHz are 230 MB of
    float32 samples, and reading the file whole took more; the model's own blocks are bounded by the
    test above)."""
    _, model = meta_24k
    peaks = {}
    for minutes in (2, 40):
        audio, ecdc, wav = (tmp_path / f"{minutes}.{ext}" for ext in ("flac", "ecdc", "wav"))
        _silent_flac(audio, 60 * minutes, 44100)
        peaks["compress", minutes] = _work_rss_mb(["compress", str(audio), str(ecdc), "-m", str(model)])
        with open(ecdc, "rb") as f:
            assert read_header(f)[0].audio_length == minutes * 60 * 24000
        peaks["decompress", minutes] = _work_rss_mb(["decompress", str(ecdc), str(wav), "-m", str(model)])
        assert sf.info(wav).frames == minutes * 60 * 24000
        audio.unlink()
        wav.unlink()
    print(peaks)
    for cmd in ("compress", "decompress"):
        assert peaks[cmd, 40] < 100 and peaks[cmd, 40] - peaks[cmd, 2] < 30, peaks
