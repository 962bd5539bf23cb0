"""Fixed-width integer packing of ``.ecdc`` code frames (10 bits per code), vectorised with NumPy.

Values are laid end to end, least significant bit first: value ``i`` occupies stream bits
``[i * bits, (i + 1) * bits)`` and stream bit ``j`` is bit ``j % 8`` of byte ``j // 8``. A segment ends
with its last partial byte padded with zero bits. This is the layout of Meta's ``BitPacker``; it is
done here on whole arrays (``np.packbits(..., bitorder="little")``) rather than one value at a time.
"""

from __future__ import annotations

import numpy as np


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


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` values of ``bits`` bits take, padding included."""
    return (count * bits + 7) // 8


def pack(values: np.ndarray, bits: int) -> bytes:
    """All of ``values`` as one padded run of bytes."""
    p = BitPacker(bits)
    return p.push(values) + p.flush()


def unpack(data: bytes | bytearray | memoryview, bits: int, count: int, bit_offset: int = 0) -> np.ndarray:
    """``count`` values (int64) of ``bits`` bits starting ``bit_offset`` bits into ``data``.

    The caller makes sure ``data`` holds at least ``bit_offset + count * bits`` bits.
    """
    first = bit_offset // 8
    skip = bit_offset % 8
    nbytes = (skip + count * bits + 7) // 8
    raw = np.frombuffer(bytes(data[first : first + nbytes]), dtype=np.uint8)
    stream = np.unpackbits(raw, bitorder="little")[skip : skip + count * bits]
    weights = (1 << np.arange(bits, dtype=np.int64))[None, :]
    return (stream.reshape(count, bits).astype(np.int64) * weights).sum(axis=1)
