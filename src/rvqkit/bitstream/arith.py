"""Quantized CDFs and the arithmetic coder of Meta's ``.ecdc`` entropy-coded streams.

The coder keeps a range ``[low, high]`` of integers. Before each symbol the range is doubled (one more
bit of precision) until it is at least ``2 ** RANGE_BITS`` wide; the symbol then narrows it to its
share of a quantized CDF, and the leading bits that ``low`` and ``high`` have in common are final and
go to the stream. At the end of a segment the remaining bits of ``low`` are written and the stream is
padded to a whole byte. Bits are stored least-significant-bit first within each byte.

Meta's coder does this one bit and one Python call at a time. Here the same integer arithmetic runs
on whole bit runs (``int.bit_length`` finds the common prefix, a bit-reversed byte table does the
per-byte bit order), and a frame's CDFs are built in one tensor operation, so the bytes are the same
while the per-symbol work is a handful of integer operations. The scaling Meta does in double
precision, ``ceil(r * (delta / 2**24))``, is exact (``r < 2**24``, ``delta < 2**25``: the product
fits in 53 bits), so exact integer arithmetic gives the same numbers.
"""

from __future__ import annotations

from bisect import bisect_left

import torch

from .bitpack import REVERSE, BitReader

RANGE_BITS = 24  # the coder's working precision: ranges are kept at least 2**24 wide
MIN_RANGE = 2  # every symbol keeps at least this many of the 2**24 slots
ROUNDOFF = 1e-8  # probabilities are floored to this step first (robust to tiny LM differences)


class ArithmeticError_(ValueError):
    """Raised (and turned into the caller's error type) when a stream does not decode."""


def quantized_cdf(probs: torch.Tensor, range_bits: int = RANGE_BITS) -> torch.Tensor:
    """Integer CDFs ``[..., card]`` (int64) over ``2 ** range_bits`` slots for probabilities ``[..., card]``.

    Each symbol gets ``floor((1 - alpha) * 2**range_bits * p)`` slots plus ``MIN_RANGE``, where
    ``alpha = MIN_RANGE * card / 2**range_bits`` leaves room for the minimum; probabilities are first
    floored to multiples of ``ROUNDOFF``. Works on any leading shape (a whole frame at once) and gives
    bit-for-bit the CDF Meta builds one codebook at a time.
    """
    probs = probs.detach()
    probs = (probs / ROUNDOFF).floor() * ROUNDOFF
    total = 2**range_bits
    card = probs.shape[-1]
    alpha = MIN_RANGE * card / total
    if alpha > 1:
        raise ValueError(f"{card} symbols do not fit in {range_bits} bits")
    ranges = (((1 - alpha) * total) * probs).floor().long() + MIN_RANGE
    return torch.cumsum(ranges, dim=-1)


class ArithmeticEncoder:
    """Encodes symbols with per-symbol CDFs; collects the output bits, handed out as whole bytes.

    Use :meth:`encode` per symbol (or :meth:`encode_many`), :meth:`take_bytes` to get the bytes
    completed so far (for writing as you go), and :meth:`finish` at the end of a segment.
    """

    def __init__(self, range_bits: int = RANGE_BITS) -> None:
        self.range_bits = range_bits
        self._total = 1 << range_bits
        self.low = 0
        self.high = 0
        self.max_bit = -1  # bits of low/high not yet written, minus one
        self._bits = 0  # pending output bits, MSB-first
        self._nbits = 0

    def _emit(self, value: int, n: int) -> None:
        self._bits = (self._bits << n) | value
        self._nbits += n

    def encode(self, cdf_low: int, cdf_high: int) -> None:
        """Narrow the range to the slots ``[cdf_low, cdf_high)`` of the symbol (``cdf[s-1]``, ``cdf[s]``)."""
        delta = self.high - self.low + 1
        if delta < self._total:  # double the range until it is wide enough
            shift = self.range_bits + 1 - delta.bit_length()  # smallest shift reaching 2**B
            self.low <<= shift
            self.high = (self.high << shift) | ((1 << shift) - 1)
            self.max_bit += shift
            delta <<= shift
        eff_low = -((-cdf_low * delta) >> self.range_bits)  # ceil
        eff_high = ((cdf_high - 1) * delta) >> self.range_bits  # floor
        self.high = self.low + eff_high
        self.low = self.low + eff_low
        # Leading bits shared by low and high (of max_bit + 1 bits) are settled: write them out.
        common = self.max_bit + 1 - (self.low ^ self.high).bit_length()
        if common > 0:
            keep = self.max_bit + 1 - common
            self._emit(self.low >> keep, common)
            mask = (1 << keep) - 1
            self.low &= mask
            self.high &= mask
            self.max_bit = keep - 1

    def encode_many(self, lows: list[int], highs: list[int]) -> None:
        for lo, hi in zip(lows, highs, strict=True):
            self.encode(lo, hi)

    def take_bytes(self) -> bytes:
        """The output bytes completed so far (LSB-first bit order), removed from the buffer."""
        n = self._nbits >> 3
        if n == 0:
            return b""
        rest = self._nbits - 8 * n
        out = (self._bits >> rest).to_bytes(n, "big").translate(REVERSE)
        self._bits &= (1 << rest) - 1
        self._nbits = rest
        return out

    def finish(self) -> bytes:
        """Write the remaining bits of ``low``, pad to a byte, return the last bytes; reset for a new segment."""
        if self.max_bit >= 0:
            self._emit(self.low, self.max_bit + 1)
        pad = -self._nbits % 8
        self._emit(0, pad)
        out = self.take_bytes()
        self.__init__(self.range_bits)  # type: ignore[misc]  # reset in place
        return out


class NeedMoreData(Exception):
    """Internal: the bits needed to go on have not arrived yet."""


class ArithmeticDecoder:
    """Decodes symbols from a :class:`BitReader` with the CDFs the encoder used.

    :meth:`decode` raises :class:`NeedMoreData` (leaving the state unchanged only if the caller
    restores a :meth:`snapshot`) when the stream has no more bits yet, and :class:`ArithmeticError_`
    when the bits cannot come from any symbol (a corrupt stream).
    """

    def __init__(self, reader: BitReader, range_bits: int = RANGE_BITS) -> None:
        self.reader = reader
        self.range_bits = range_bits
        self._total = 1 << range_bits
        self.low = 0
        self.high = 0
        self.current = 0
        self.max_bit = -1

    def snapshot(self) -> tuple[int, int, int, int, int]:
        return (self.low, self.high, self.current, self.max_bit, self.reader.tell())

    def restore(self, state: tuple[int, int, int, int, int]) -> None:
        self.low, self.high, self.current, self.max_bit, pos = state
        self.reader.seek(pos)

    def decode(self, cdf: list[int]) -> int:
        """The next symbol, given its CDF as a list of ints (``cdf[-1] <= 2**range_bits``)."""
        delta = self.high - self.low + 1
        if delta < self._total:
            shift = self.range_bits + 1 - delta.bit_length()  # smallest shift reaching 2**B
            if self.reader.available < shift:
                raise NeedMoreData
            self.low <<= shift
            self.high = (self.high << shift) | ((1 << shift) - 1)
            self.current = (self.current << shift) | self.reader.read(shift)
            self.max_bit += shift
            delta <<= shift
        c = self.current - self.low
        # First symbol whose top slot reaches c: floor((cdf[s] - 1) * delta / 2**B) >= c.
        threshold = -((-c << self.range_bits) // delta) + 1
        s = bisect_left(cdf, threshold)
        if s >= len(cdf):
            raise ArithmeticError_("corrupt entropy-coded data (value beyond the last symbol)")
        lo = cdf[s - 1] if s > 0 else 0
        eff_low = -((-lo * delta) >> self.range_bits)
        if c < eff_low:
            raise ArithmeticError_("corrupt entropy-coded data (value between symbols)")
        eff_high = ((cdf[s] - 1) * delta) >> self.range_bits
        self.high = self.low + eff_high
        self.low = self.low + eff_low
        common = self.max_bit + 1 - (self.low ^ self.high).bit_length()
        if common > 0:
            keep = self.max_bit + 1 - common
            mask = (1 << keep) - 1
            self.low &= mask
            self.high &= mask
            self.current &= mask
            self.max_bit = keep - 1
        return s
