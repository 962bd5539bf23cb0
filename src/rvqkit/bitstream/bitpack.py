"""Bit I/O of ``.ecdc`` streams: fixed-width packing of code frames (10 bits per code), vectorised with
NumPy, and :class:`BitReader`, which reads bits from bytes that arrive in pieces.

Values are laid end to end, least significant bit first: value ``i`` occupies stream bits
``[i * bits, (i + 1) * bits)`` and stream bit ``j`` is bit ``j % 8`` of byte ``j // 8``. A segment ends
with its last partial byte padded with zero bits. This is the layout of Meta's ``BitPacker``; it is
done here on whole arrays (``np.packbits(..., bitorder="little")``) rather than one value at a time.
"""

from __future__ import annotations

import numpy as np

# REVERSE[b] is byte b with its 8 bits in the opposite order: the stream is LSB-first per byte, the
# arithmetic coder and BitReader.read work MSB-first.
REVERSE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def _to_bits(values: np.ndarray, bits: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    if v.size and (v.min() < 0 or v.max() >= 1 << bits):
        raise ValueError(f"values must be in [0, {1 << bits})")
    return ((v[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)


class BitPacker:
    """Packs ``bits``-wide values into bytes as they come; :meth:`flush` pads the last byte (end of segment)."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self._carry = np.zeros(0, dtype=np.uint8)  # fewer than 8 pending bits

    def push(self, values: np.ndarray) -> bytes:
        """Append values (any shape, flattened in C order); return the bytes completed so far."""
        stream = np.concatenate([self._carry, _to_bits(values, self.bits)])
        whole = stream.size - stream.size % 8
        self._carry = stream[whole:]
        return np.packbits(stream[:whole], bitorder="little").tobytes()

    def flush(self) -> bytes:
        """The last partial byte, zero-padded (nothing if the values ended on a byte boundary)."""
        out = np.packbits(self._carry, bitorder="little").tobytes() if self._carry.size else b""
        self._carry = np.zeros(0, dtype=np.uint8)
        return out


def pack(values: np.ndarray, bits: int) -> bytes:
    """All of ``values`` as one padded run of bytes."""
    p = BitPacker(bits)
    return p.push(values) + p.flush()


def unpack(data: bytes | bytearray | memoryview, bits: int, count: int, bit_offset: int = 0) -> np.ndarray:
    """``count`` values (int64) of ``bits`` bits starting ``bit_offset`` bits into ``data``.

    The caller makes sure ``data`` holds at least ``bit_offset + count * bits`` bits.
    """
    reader = BitReader()
    reader.feed(bytes(data))
    reader.seek(bit_offset)
    return reader.read_array(count, bits)


class BitReader:
    """Reads bits in stream order from bytes that may arrive in pieces (LSB-first within each byte)."""

    def __init__(self) -> None:
        self._buf = bytearray()  # bit-reversed bytes: stream order is MSB-first here
        self._pos = 0  # bit position in _buf

    def feed(self, data: bytes) -> None:
        drop = self._pos >> 3
        if drop:
            del self._buf[:drop]
            self._pos -= 8 * drop
        self._buf += data.translate(REVERSE)

    @property
    def available(self) -> int:
        """Bits not yet read."""
        return 8 * len(self._buf) - self._pos

    def read(self, n: int) -> int:
        """The next ``n`` bits as an integer, the first bit most significant (caller checks availability)."""
        start = self._pos >> 3
        end = (self._pos + n + 7) >> 3
        chunk = int.from_bytes(self._buf[start:end], "big")
        extra = 8 * (end - start) - (self._pos - 8 * start) - n
        self._pos += n
        return (chunk >> extra) & ((1 << n) - 1)

    def read_array(self, count: int, bits: int) -> np.ndarray:
        """``count`` values of ``bits`` bits, each stored least significant bit first (int64)."""
        start = self._pos >> 3
        skip = self._pos & 7
        end = (self._pos + count * bits + 7) >> 3
        raw = np.frombuffer(bytes(self._buf[start:end]), dtype=np.uint8)
        stream = np.unpackbits(raw, bitorder="big")[skip : skip + count * bits]
        self._pos += count * bits
        weights = np.left_shift(1, np.arange(bits, dtype=np.int64))
        return stream.reshape(count, bits).astype(np.int64) @ weights

    def align(self) -> None:
        """Skip to the next byte boundary (the rest of a partly read byte is padding)."""
        self._pos = (self._pos + 7) & ~7

    def take_bytes(self, n: int) -> bytes:
        """``n`` whole bytes from a byte boundary (e.g. a segment's scale)."""
        start = self._pos >> 3
        self._pos += 8 * n
        return bytes(self._buf[start : start + n]).translate(REVERSE)

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int) -> None:
        self._pos = pos
