"""Token ids for RVQ codes: which id stands for code ``c`` of codebook ``k``, and for each special token.

Audio ids start at ``offset`` (so they can follow a text vocabulary). With ``shift`` (the default for
single-stream layouts) codebook ``k`` owns ids ``offset + k × codebook_size + [0, codebook_size)``, so
every (codebook, code) pair has its own id; without it every codebook uses ``offset + [0, codebook_size)``
(one embedding table per stream, as MusicGen does). Special tokens get ids after the audio ids unless
given: they may also reuse ids of the text vocabulary below ``offset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import CodesError


class TokenError(CodesError):
    """Token ids that cannot be turned back into codes, or token settings that cannot work.

    ``item``, ``position`` and ``stream`` (for multi-stream layouts) locate the offending token when known.
    """

    def __init__(
        self, message: str, item: int | None = None, position: int | None = None, stream: int | None = None
    ) -> None:
        where = []
        if item is not None:
            where.append(f"item {item}")
        if stream is not None:
            where.append(f"stream {stream}")
        if position is not None:
            where.append(f"position {position}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.item, self.position, self.stream = item, position, stream


def _check_id(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TokenError(f"{name} token id must be a non-negative integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Vocab:
    """Resolved token ids. Build it with :meth:`build`; the fields are concrete ids.

    Attributes:
        n_q: codebooks (the first ``n_q`` of the codes).
        codebook_size: entries per codebook (1024 for EnCodec).
        offset: id of code 0 of codebook 0.
        shift: codebook ``k`` ids are shifted by ``k × codebook_size``.
        pad: id that fills positions past an item's end (never inside an item).
        begin, end: ids of the begin / end tokens, or None when the sequences have none.
        delay_pad: per-codebook id that fills the delay pattern's empty cells (empty tuple if unused).
    """

    n_q: int
    codebook_size: int
    offset: int
    shift: bool
    pad: int
    begin: int | None = None
    end: int | None = None
    delay_pad: tuple[int, ...] = ()

    @classmethod
    def build(
        cls,
        n_q: int,
        codebook_size: int = 1024,
        offset: int = 0,
        shift: bool = True,
        begin: bool | int = False,
        end: bool | int = False,
        pad: int | None = None,
        delay_pad: int | Sequence[int] | None = None,
        needs_delay_pad: bool = False,
    ) -> Vocab:
        """Assign ids: given ids are kept, the others (``None`` / ``True``) take the next free ids after
        the audio ids (skipping given ones), in the order pad, begin, end, delay pad (one id shared by all
        codebooks)."""
        if isinstance(n_q, bool) or not isinstance(n_q, int) or n_q < 1:
            raise TokenError(f"n_q must be a positive number of codebooks, got {n_q!r}")
        if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 1:
            raise TokenError(f"codebook_size must be a positive integer, got {codebook_size!r}")
        offset = _check_id("offset (first audio)", offset)
        next_free = offset + (n_q if shift else 1) * codebook_size

        given = [begin, end, pad, *(delay_pad if isinstance(delay_pad, Sequence) else [delay_pad])]
        taken = {v for v in given if isinstance(v, int) and not isinstance(v, bool)}

        def resolve(name: str, value: object) -> int | None:
            nonlocal next_free
            if value is None or value is True:
                while next_free in taken:  # auto ids skip the ids given explicitly
                    next_free += 1
                next_free += 1
                return next_free - 1
            if value is False:
                return None
            return _check_id(name, value)

        if pad is False:
            raise TokenError("a pad token is required (it fills positions past an item's end)")
        pad_id = resolve("pad", pad)
        begin_id = resolve("begin", False if begin is None else begin)
        end_id = resolve("end", False if end is None else end)
        delays: tuple[int, ...] = ()
        if needs_delay_pad:
            if delay_pad is False:
                raise TokenError("the delay layout needs delay pad ids (they fill its empty cells)")
            if delay_pad is None or isinstance(delay_pad, (int, bool)):
                one = resolve("delay pad", delay_pad)
                assert one is not None
                delays = (one,) * n_q
            else:
                delays = tuple(_check_id("delay pad", d) for d in delay_pad)
                if len(delays) != n_q:
                    raise TokenError(f"{len(delays)} delay pad ids given for {n_q} codebooks")
        elif delay_pad is not None:
            raise TokenError("delay pad ids are only used by the 'delay' layout")
        assert pad_id is not None
        vocab = cls(n_q, codebook_size, offset, shift, pad_id, begin_id, end_id, delays)
        vocab.validate()
        return vocab

    # -- facts -----------------------------------------------------------------------------------------
    @property
    def audio_end(self) -> int:
        """One past the last audio id."""
        return self.offset + (self.n_q if self.shift else 1) * self.codebook_size

    def specials(self) -> dict[str, int]:
        """Special token names and ids (delay pads as ``delay_pad_<k>``)."""
        out = {"pad": self.pad}
        if self.begin is not None:
            out["begin"] = self.begin
        if self.end is not None:
            out["end"] = self.end
        for k, d in enumerate(self.delay_pad):
            out[f"delay_pad_{k}"] = d
        return out

    @property
    def size(self) -> int:
        """Vocabulary size: one more than the largest id used (ids below ``offset`` count as used)."""
        return max([self.audio_end, *(i + 1 for i in self.specials().values())])

    def code_range(self, k: int) -> tuple[int, int]:
        """``[lo, hi)`` ids of codebook ``k``."""
        lo = self.offset + (k * self.codebook_size if self.shift else 0)
        return lo, lo + self.codebook_size

    def describe(self, token: int) -> str:
        """Human description of an id for error messages: ``code 17 of codebook 2 (id 2065)``, ``pad (id 1024)``."""
        names = [n for n, i in self.specials().items() if i == token]
        if names:
            kinds = dict.fromkeys("delay pad" if n.startswith("delay") else n for n in names)
            return f"{' / '.join(kinds)} (id {token})"
        if self.offset <= token < self.audio_end:
            rel = token - self.offset
            if self.shift:
                return f"code {rel % self.codebook_size} of codebook {rel // self.codebook_size} (id {token})"
            return f"code {rel} (id {token})"
        return f"id {token}, outside the audio and special ids"

    def validate(self) -> None:
        """Specials must not be audio ids, and pad must differ from every other special (it marks the end)."""
        for name, token in self.specials().items():
            if self.offset <= token < self.audio_end:
                raise TokenError(
                    f"{name} token id {token} falls inside the audio ids [{self.offset}, {self.audio_end})"
                )
            if name != "pad" and token == self.pad:
                raise TokenError(f"{name} token id {token} equals the pad id; pad must be a distinct id")

    # -- codes <-> ids ---------------------------------------------------------------------------------
    def _shifts(self, device: torch.device) -> torch.Tensor:
        k = torch.arange(self.n_q, device=device, dtype=torch.long)
        return self.offset + (k * self.codebook_size if self.shift else torch.zeros_like(k))

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Ids of codes ``[..., n_q, frames]`` (same shape)."""
        return codes.long() + self._shifts(codes.device)[:, None]

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`codes_to_ids`; values outside ``[0, codebook_size)`` mark foreign ids."""
        return ids.long() - self._shifts(ids.device)[:, None]
