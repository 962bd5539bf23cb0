"""Token layouts: RVQ codes ``[batch, n_q, frames]`` to token sequences for a language model, and back.

Layouts (``n_q`` codebooks, ``T`` frames; ``c[k, t]`` is code ``t`` of codebook ``k``):

``flatten``
    one sequence, frame by frame: ``c[0,0] c[1,0] … c[n_q-1,0] c[0,1] …`` (``T × n_q`` tokens).
``codebook``
    one sequence, codebook by codebook: ``c[0,0] c[0,1] … c[0,T-1] c[1,0] …`` (not streamable).
``parallel``
    ``n_q`` streams of ``T`` steps, step ``t`` holds frame ``t`` of every codebook.
``delay``
    ``n_q`` streams of ``T + n_q - 1`` steps, codebook ``k`` delayed by ``k`` steps (MusicGen / audiocraft's
    delayed pattern): stream ``k`` at step ``s`` holds ``c[k, s-k]``, or codebook ``k``'s delay pad where
    ``s-k`` is before the first or after the last frame.

An optional begin token (a whole step of begin ids for multi-stream layouts) starts each item and an end
token ends it; items shorter than the longest are padded with the pad id and an attention mask tells
real positions (True) from padding. Decoding checks every position and raises :class:`TokenError`
naming the item, stream and position of the first token that does not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .pattern import BEGIN, DELAY, END, Pattern, pattern
from .vocab import TokenError, Vocab

LAYOUTS = ("flatten", "codebook", "delay", "parallel")
STREAM_LAYOUTS = ("delay", "parallel")
LayoutName = Literal["flatten", "codebook", "delay", "parallel"]


def as_long(x: Any, name: str) -> torch.Tensor:
    """An integer array (torch, numpy, nested lists) as an int64 CPU tensor; floats are refused."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TokenError(f"{name} must be integers, got dtype {t.dtype}")
    return t.detach().cpu().long()


@dataclass
class TokenBatch:
    """Token sequences of a batch.

    Attributes:
        ids: int64 ``[batch, length]`` (``flatten``, ``codebook``) or ``[batch, n_q, length]`` (``delay``,
            ``parallel``); positions past an item's end hold the pad id.
        attention_mask: bool ``[batch, length]``, True at an item's own positions (steps for streams).
    """

    ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        """int64 ``[batch]``: positions (steps) of each item, begin and end tokens included."""
        return self.attention_mask.sum(-1)

    def items(self) -> list[torch.Tensor]:
        """Each item's ids without padding: ``[length]`` or ``[n_q, length]``."""
        return [
            self.ids[b].index_select(-1, self.attention_mask[b].nonzero().reshape(-1))
            for b in range(self.ids.shape[0])
        ]


class TokenLayout:
    """How codes become token ids and back; see the module docstring for the layouts.

    Args:
        layout: ``"flatten"``, ``"codebook"``, ``"delay"`` or ``"parallel"``.
        n_q: codebooks to use (the first ``n_q`` of the codes; coarse tokens with a small ``n_q``).
        codebook_size: entries per codebook (1024 for EnCodec).
        offset: id of the first audio token, e.g. the size of a text vocabulary they follow.
        begin: ``True`` for a begin token with the next free id, an int for a chosen id, ``False`` for none.
        end: same for the end token.
        pad: pad id; ``None`` picks the first id after the audio ids.
        delay_pad: ``delay`` layout only: id (or one id per codebook) of its empty cells; ``None`` picks
            the next free id. It may equal ``begin`` (audiocraft uses one special id for both).
        shift: shift codebook ``k``'s ids by ``k × codebook_size``; default True for single-stream layouts
            (ids must tell codebooks apart) and False for multi-stream ones (one embedding table per stream).
        padding_side: where shorter items are padded, ``"right"`` or ``"left"``.

    The same settings always give the same ids; :meth:`settings` and :meth:`from_settings` store them.
    """

    def __init__(
        self,
        layout: LayoutName = "flatten",
        n_q: int = 8,
        codebook_size: int = 1024,
        offset: int = 0,
        *,
        begin: bool | int = False,
        end: bool | int = False,
        pad: int | None = None,
        delay_pad: int | Sequence[int] | None = None,
        shift: bool | None = None,
        padding_side: Literal["right", "left"] = "right",
    ) -> None:
        if layout not in LAYOUTS:
            raise TokenError(f"unknown token layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
        if padding_side not in ("right", "left"):
            raise TokenError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.layout: str = layout
        self.padding_side = padding_side
        self.vocab = Vocab.build(
            n_q,
            codebook_size,
            offset,
            shift=(layout not in STREAM_LAYOUTS) if shift is None else bool(shift),
            begin=begin,
            end=end,
            pad=pad,
            delay_pad=delay_pad,
            needs_delay_pad=layout == "delay",
        )
        v = self.vocab  # the special-id table the patterns index: begin, end, delay pads (-1: none)
        delays = v.delay_pad or (-1,) * v.n_q
        table = [-1 if v.begin is None else v.begin, -1 if v.end is None else v.end, *delays]
        self._specials = torch.tensor(table, dtype=torch.long)

    # -- facts -----------------------------------------------------------------------------------------
    @property
    def n_q(self) -> int:
        return self.vocab.n_q

    @property
    def codebook_size(self) -> int:
        return self.vocab.codebook_size

    @property
    def vocab_size(self) -> int:
        """Embedding rows a model needs: one more than the largest id (ids below ``offset`` included)."""
        return self.vocab.size

    @property
    def multi_stream(self) -> bool:
        """True when ids are ``[batch, n_q, steps]`` (``delay``, ``parallel``)."""
        return self.layout in STREAM_LAYOUTS

    @property
    def n_extra(self) -> int:
        """Begin and end positions per item."""
        return int(self.vocab.begin is not None) + int(self.vocab.end is not None)

    def length(self, frames: int) -> int:
        """Positions (steps for multi-stream layouts) of an item of ``frames`` code frames."""
        body = {"flatten": frames * self.n_q, "codebook": frames * self.n_q, "parallel": frames}
        return body.get(self.layout, frames + self.n_q - 1) + self.n_extra

    def settings(self) -> dict[str, Any]:
        """JSON-ready settings that :meth:`from_settings` turns back into an equal layout."""
        v = self.vocab
        return {
            "layout": self.layout,
            "n_q": v.n_q,
            "codebook_size": v.codebook_size,
            "offset": v.offset,
            "shift": v.shift,
            "begin": v.begin if v.begin is not None else False,
            "end": v.end if v.end is not None else False,
            "pad": v.pad,
            "delay_pad": list(v.delay_pad) if v.delay_pad else None,
            "padding_side": self.padding_side,
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_settings(cls, s: dict[str, Any]) -> TokenLayout:
        try:
            return cls(
                s["layout"],
                int(s["n_q"]),
                int(s["codebook_size"]),
                int(s["offset"]),
                begin=s.get("begin", False),
                end=s.get("end", False),
                pad=s.get("pad"),
                delay_pad=s.get("delay_pad"),
                shift=s.get("shift"),
                padding_side=s.get("padding_side", "right"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise TokenError(f"malformed token layout settings ({e})") from e

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenLayout) and self.settings() == other.settings()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        s = self.settings()
        return "TokenLayout(" + ", ".join(f"{k}={v!r}" for k, v in s.items()) + ")"

    # -- encode ----------------------------------------------------------------------------------------
    def check_codes(self, codes: Any, frame_lengths: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[batch, n_q, frames]`` (int64, the first ``n_q`` codebooks of ``codes``: ``[batch,
        n_q', frames]`` or one item ``[n_q', frames]``) and ``frame_lengths`` ``[batch]`` (default: all
        frames), checked: every code an item holds is in ``[0, codebook_size)``. Raises :class:`TokenError`
        naming the item (and frame) of the first problem."""
        c = as_long(codes, "codes")
        if c.ndim == 2:
            c = c[None]
        if c.ndim != 3:
            raise TokenError(f"codes must be [batch, n_q, frames] or [n_q, frames], got {tuple(c.shape)}")
        if c.shape[1] < self.n_q:
            raise TokenError(f"the layout takes {self.n_q} codebooks, the codes hold {c.shape[1]}")
        c = c[:, : self.n_q]
        if frame_lengths is None:
            lengths = torch.full((c.shape[0],), c.shape[-1], dtype=torch.long)
        else:
            lengths = as_long(frame_lengths, "frame_lengths").reshape(-1)
            if len(lengths) != c.shape[0]:
                raise TokenError(f"{len(lengths)} frame lengths given for {c.shape[0]} items")
        frames = c.shape[-1]
        outside = (lengths < 0) | (lengths > frames)
        bad = torch.zeros(0, 3, dtype=torch.long)
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= self.codebook_size):
            held = torch.arange(frames) < lengths.clamp(0, frames)[:, None]  # codes past an item's end
            bad = (((c < 0) | (c >= self.codebook_size)) & held[:, None]).nonzero()  # (item, k, t)
        first_bad = int(bad[0, 0]) if len(bad) else len(lengths)
        if outside[: first_bad + 1].any():  # items are checked in order, each one's length first
            b = int(outside.nonzero()[0])
            raise TokenError(f"frame length {int(lengths[b])} outside [0, {frames}]", item=b)
        if len(bad):
            mine = bad[bad[:, 0] == first_bad]
            k, t = mine[mine[:, 2].argmin(), 1:].tolist()  # the first frame, then the first codebook
            raise TokenError(
                f"code {int(c[first_bad, k, t])} of codebook {k} at frame {t} is outside [0, {self.codebook_size})",
                item=first_bad,
            )
        return c, lengths

    def pattern(self, frames: int) -> Pattern:
        """The index map of an item of ``frames`` frames (see :mod:`rvqkit.tokens.pattern`)."""
        v = self.vocab
        return pattern(self.layout, self.n_q, frames, v.begin is not None, v.end is not None)

    def _gather(self, ids: torch.Tensor, pat: Pattern) -> torch.Tensor:
        """Sequences ``[g, streams, length]`` of code ids ``[g, n_q, frames]`` laid out by ``pat``."""
        g = ids.shape[0]
        src = torch.cat([ids.reshape(g, -1), self._specials.expand(g, -1)], dim=1)
        return src.index_select(1, pat.source).view(g, pat.streams, pat.length)

    def encode_item(self, codes: Any) -> torch.Tensor:
        """Ids of one item's codes ``[n_q', frames]`` (checked): ``[length]`` or ``[n_q, length]``."""
        c, _ = self.check_codes(codes)
        seq = self._gather(self.vocab.codes_to_ids(c), self.pattern(c.shape[-1]))[0]
        return seq if self.multi_stream else seq[0]

    def encode(self, codes: Any, frame_lengths: Any = None) -> TokenBatch:
        """Token ids of codes ``[batch, n_q', frames]`` (``n_q' ≥ n_q``; the first ``n_q`` are used; a single
        ``[n_q', frames]`` item is a batch of one). ``frame_lengths`` ``[batch]`` gives each item's valid
        frames (default: all); shorter items are padded with the pad id and masked out. An
        :class:`~rvqkit.Encoded` may be passed as ``codes``: its codes and frame lengths are used."""
        from ..encoded import Encoded

        if isinstance(codes, Encoded):
            codes, frame_lengths = (
                codes.codes,
                codes.frame_lengths if frame_lengths is None else frame_lengths,
            )
        c, lengths = self.check_codes(codes, frame_lengths)
        ids = self.vocab.codes_to_ids(c)
        batch = c.shape[0]
        longest = self.length(int(lengths.max())) if batch else 0
        out = torch.full(
            (batch, self.n_q if self.multi_stream else 1, longest), self.vocab.pad, dtype=torch.long
        )
        mask = torch.zeros(batch, longest, dtype=torch.bool)
        for n in torch.unique(lengths).tolist():  # one gather per distinct item length
            rows = (lengths == n).nonzero().reshape(-1)
            pat = self.pattern(n)
            cols = self._columns(pat.length, longest)
            out[rows, :, cols] = self._gather(ids[rows, :, :n], pat)
            mask[rows, cols] = True
        return TokenBatch(out if self.multi_stream else out[:, 0], mask)

    def _columns(self, n: int, longest: int) -> slice:
        """Where an item of ``n`` positions sits in a batch padded to ``longest`` (``padding_side``)."""
        start = longest - n if self.padding_side == "left" else 0
        return slice(start, start + n)

    def pad_items(self, items: Sequence[torch.Tensor]) -> TokenBatch:
        """Stack per-item ids into a padded :class:`TokenBatch` (padding on ``padding_side``)."""
        longest = max((it.shape[-1] for it in items), default=0)
        shape = (len(items), self.n_q, longest) if self.multi_stream else (len(items), longest)
        ids = torch.full(shape, self.vocab.pad, dtype=torch.long)
        mask = torch.zeros(len(items), longest, dtype=torch.bool)
        for b, it in enumerate(items):
            cols = self._columns(it.shape[-1], longest)
            ids[b, ..., cols] = it
            mask[b, cols] = True
        return TokenBatch(ids, mask)

    # -- decode ----------------------------------------------------------------------------------------
    def decode(self, ids: Any, attention_mask: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[batch, n_q, frames]`` (zero past each item's end) and ``frame_lengths`` ``[batch]`` from
        ids as :meth:`encode` makes them. Without ``attention_mask``, an item ends at its trailing pad ids
        (leading ones with left padding). A :class:`TokenBatch` may be passed as ``ids`` (its mask is used).
        Raises :class:`TokenError` at the first token that does not fit (of the first item that has one)."""
        if isinstance(ids, TokenBatch):
            ids, attention_mask = ids.ids, ids.attention_mask if attention_mask is None else attention_mask
        t = as_long(ids, "token ids")
        want = 3 if self.multi_stream else 2
        if t.ndim == want - 1:
            t = t[None]
        if t.ndim != want or (self.multi_stream and t.shape[1] != self.n_q):
            shape = "[batch, n_q, steps]" if self.multi_stream else "[batch, length]"
            raise TokenError(
                f"{self.layout} token ids must be {shape} with n_q={self.n_q}, got {tuple(t.shape)}"
            )
        m = self._mask_from_pad(t) if attention_mask is None else self._check_mask(attention_mask, t)
        if not self.multi_stream:
            t = t[:, None]
        sizes = m.sum(-1)
        first, one_run = torch.zeros_like(sizes), torch.ones_like(sizes, dtype=torch.bool)
        if m.shape[-1]:  # where each item starts, and whether its mask is one run (it usually is)
            first = m.to(torch.int8).argmax(-1)
            one_run = (sizes == 0) | (m.flip(-1).to(torch.int8).argmax(-1) == m.shape[-1] - first - sizes)
        where: torch.Tensor | None = None
        results: list[tuple[torch.Tensor, torch.Tensor]] = []
        errors: list[TokenError] = []
        for n in torch.unique(sizes).tolist():  # one check per distinct item length
            rows = (sizes == n).nonzero().reshape(-1)
            start = int(first[rows[0]])
            if bool(one_run[rows].all()) and bool((first[rows] == start).all()):
                seq = t[rows, :, start : start + n]  # [g, streams, n]
                pos = torch.arange(start, start + n).expand(len(rows), n)
            else:  # the masked positions of each row, in order
                if where is None:
                    where = torch.sort((~m).to(torch.int8), dim=-1, stable=True).indices
                pos = where[rows, :n]
                seq = t[rows[:, None], :, pos].transpose(1, 2)
            try:
                results.append((rows, self._decode_rows(seq, rows, pos)))
            except TokenError as e:
                errors.append(e)
        if errors:  # the first item that has an error, as if the items were read one by one
            raise min(errors, key=lambda e: e.item if e.item is not None else -1)
        frames = torch.zeros(t.shape[0], dtype=torch.long)
        for rows, grid in results:
            frames[rows] = grid.shape[-1]
        codes = torch.zeros(t.shape[0], self.n_q, int(frames.max()) if len(frames) else 0, dtype=torch.long)
        for rows, grid in results:
            codes[rows, :, : grid.shape[-1]] = grid
        return codes, frames

    def _check_mask(self, mask: Any, t: torch.Tensor) -> torch.Tensor:
        m = mask.detach().cpu() if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
        if m.ndim == 1:
            m = m[None]
        if m.shape != (t.shape[0], t.shape[-1]):
            raise TokenError(f"attention mask {tuple(m.shape)} does not match ids {tuple(t.shape)}")
        if m.is_floating_point() or m.is_complex():
            raise TokenError(f"attention mask must be bool (or 0/1 integers), got dtype {m.dtype}")
        if m.dtype != torch.bool and m.numel() and (int(m.min()) < 0 or int(m.max()) > 1):
            raise TokenError("attention mask must hold only 0 and 1")
        return m.bool()

    def _mask_from_pad(self, t: torch.Tensor) -> torch.Tensor:
        is_pad = t == self.vocab.pad
        if self.multi_stream:
            is_pad = is_pad.all(dim=1)
        if self.padding_side == "left":
            return ~is_pad.long().cumprod(-1).bool()
        return ~is_pad.long().flip(-1).cumprod(-1).flip(-1).bool()

    def frames_for(self, positions: int) -> int | None:
        """Frames of an item of ``positions`` positions (steps), or None if no item has that length."""
        body = positions - self.n_extra
        if self.layout in ("flatten", "codebook"):
            return body // self.n_q if body >= 0 and body % self.n_q == 0 else None
        frames = body - (self.n_q - 1 if self.layout == "delay" else 0)
        return frames if frames >= 0 and body >= 0 else None

    def decode_item(self, seq: torch.Tensor, item: int = 0, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Codes ``[n_q, frames]`` of one item's ids (``[length]`` or ``[n_q, length]``, no padding).
        ``pos`` maps each column to its position in the caller's ids, for error messages."""
        n = seq.shape[-1]
        pos = torch.arange(n) if pos is None else pos
        s = seq.reshape(1, self.n_q if self.multi_stream else 1, n)
        return self._decode_rows(s, torch.tensor([item]), pos.reshape(1, n))[0]

    def _decode_rows(self, seq: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Codes ``[g, n_q, frames]`` of items of one length, ``seq`` ``[g, streams, n]`` (item numbers
        ``rows``, positions ``pos`` ``[g, n]`` in the caller's ids); the first bad one raises."""
        g, _, n = seq.shape
        frames = self.frames_for(n)
        if frames is None:
            raise self._length_error(seq[0], int(rows[0]), pos[0])
        pat = self.pattern(frames)
        flat = seq.reshape(g, -1)
        bad_fill = flat.index_select(1, pat.fill_cells) != self._specials[pat.fill_kind]
        codes = self.vocab.ids_to_codes(flat.index_select(1, pat.code_cells).view(g, self.n_q, frames))
        bad_code = (codes < 0) | (codes >= self.codebook_size)
        if not (bad_fill.any() or bad_code.any()):
            return codes
        bad_code = bad_code.view(g, -1)[:, pat.code_order]
        i = int((bad_fill.any(1) | bad_code.any(1)).nonzero()[0])
        if bad_fill[i].any():
            j = int(bad_fill[i].nonzero()[0])
            cell, kind = int(pat.fill_cells[j]), int(pat.fill_kind[j])
            raise self._special_error(
                kind, int(flat[i, cell]), int(rows[i]), int(pos[i, pat.column(cell)]), pat.stream(cell)
            )
        code = int(pat.code_order[int(bad_code[i].nonzero()[0])])
        k, cell = code // frames, int(pat.code_cells[code])
        found = int(flat[i, cell])
        lo, hi = self.vocab.code_range(k)
        raise TokenError(
            f"{self.vocab.describe(found)} where a code of codebook {k} belongs (ids [{lo}, {hi}))",
            item=int(rows[i]),
            position=int(pos[i, pat.column(cell)]),
            stream=k if self.multi_stream else None,
        )

    def _special_error(self, kind: int, found: int, item: int, position: int, stream: int) -> TokenError:
        v = self.vocab
        what = v.describe(found)
        if kind >= DELAY:
            k = kind - DELAY
            message = (
                f"broken delay pattern: expected codebook {k}'s delay pad (id {v.delay_pad[k]}), found {what}"
            )
        else:
            name, token = ("begin", v.begin) if kind == BEGIN else ("end", v.end)
            message = f"expected the {name} token (id {token}), found {what}"
        return TokenError(message, item=item, position=position, stream=stream if self.multi_stream else None)

    def _length_error(self, seq: torch.Tensor, item: int, pos: torch.Tensor) -> TokenError:
        """The error of an item whose length no item can have (``seq`` ``[streams, n]``): a wrong begin
        or end token if there is one, else what the length lacks."""
        v = self.vocab
        n = seq.shape[-1]

        def at(col: int) -> int:
            return int(pos[col]) if col < n else n

        start, stop = 0, n
        for kind, token, col in ((BEGIN, v.begin, 0), (END, v.end, n - 1)):
            if token is None:
                continue
            if kind == BEGIN and n == 0:
                return TokenError("empty sequence: the begin token is missing", item=item)
            if kind == END and stop - start < 1:
                return TokenError(
                    "the end token is missing (the sequence stops after the begin token)",
                    item=item,
                    position=n,
                )
            bad = (seq[:, col] != token).nonzero()
            if len(bad):
                k = int(bad[0])
                return self._special_error(kind, int(seq[k, col]), item, at(col), k)
            start, stop = (1, stop) if kind == BEGIN else (start, n - 1)
        nb = stop - start
        if self.layout == "delay":
            return TokenError(
                f"{nb} audio steps are fewer than the {self.n_q - 1} that the delay pattern of {self.n_q} "
                "codebooks adds",
                item=item,
                position=at(stop),
            )
        whole = nb // self.n_q
        col = start + whole * self.n_q if self.layout == "flatten" else stop
        return TokenError(
            f"{nb} audio tokens are not whole frames of {self.n_q} codebooks "
            f"({whole} frames and {nb % self.n_q} tokens left over)",
            item=item,
            position=at(col),
        )

    # -- streaming -------------------------------------------------------------------------------------
    def streamer(self, batch_size: int = 1) -> TokenStreamer:
        """A :class:`TokenStreamer` that emits this layout's ids frame by frame."""
        return TokenStreamer(self, batch_size)


class TokenStreamer:
    """Emit token ids frame by frame, as an encoder produces codes, for a batch of equal-length items.

    ``push(frames)`` takes codes ``[batch, n_q', t]`` (or one frame ``[batch, n_q']``) and returns the ids
    that are complete: ``[batch, n]`` or ``[batch, n_q, n]`` steps. ``flush()`` returns the rest (the
    delay pattern's last ``n_q - 1`` steps, the end token). The concatenation of everything emitted equals
    :meth:`TokenLayout.encode` of all the frames. The ``codebook`` layout cannot stream (it needs the
    last frame before its second token).

    The ids are the layout's pattern cut by step: the ``delay`` layout keeps the last ``n_q - 1`` frames
    (delay pads before the first), lays out those and the new frames with the pattern of that many frames
    (no begin or end) and emits the steps of the new frames.
    """

    def __init__(self, layout: TokenLayout, batch_size: int = 1) -> None:
        if layout.layout == "codebook":
            raise TokenError(
                "the codebook layout cannot be streamed (codebook 1 starts after the last frame)"
            )
        self.layout = layout
        self.batch_size = batch_size
        self.frames = 0
        self.started = False
        self.finished = False
        v = layout.vocab
        self._lag = v.n_q - 1 if layout.layout == "delay" else 0  # frames kept for the steps to come
        pads = torch.tensor(v.delay_pad, dtype=torch.long)
        self._tail = pads.view(1, -1, 1).expand(batch_size, v.n_q, self._lag).clone() if self._lag else None

    def _steps(self, ids: torch.Tensor, flush: bool) -> torch.Tensor:
        """The steps of the frames ``ids`` ``[batch, n_q, t]`` (after the kept ones); with ``flush`` also
        the closing steps."""
        window = ids if self._tail is None else torch.cat([self._tail, ids], dim=-1)
        frames = window.shape[-1]
        pat = pattern(self.layout.layout, self.layout.n_q, frames, begin=False, end=False)
        cut = pat.source.view(pat.streams, pat.length)[
            :, self._lag : pat.length - (0 if flush else self._lag)
        ]
        src = torch.cat(
            [window.reshape(self.batch_size, -1), self.layout._specials.expand(self.batch_size, -1)], 1
        )
        if self._tail is not None:
            self._tail = window[..., frames - self._lag :]
        out = src[:, cut]
        return out if self.layout.multi_stream else out.reshape(self.batch_size, -1)

    def _special(self, token: int | None) -> list[torch.Tensor]:
        if token is None:
            return []
        shape = (self.batch_size, self.layout.n_q, 1) if self.layout.multi_stream else (self.batch_size, 1)
        return [torch.full(shape, token, dtype=torch.long)]

    def _begin(self) -> list[torch.Tensor]:
        if self.started:
            return []
        self.started = True
        return self._special(self.layout.vocab.begin)

    def push(self, frames: Any) -> torch.Tensor:
        """Ids made complete by these code frames ``[batch, n_q', t]`` or ``[batch, n_q']``."""
        if self.finished:
            raise TokenError("the token stream was flushed; start a new streamer")
        c = as_long(frames, "codes")
        if c.ndim == 2:
            c = c[..., None]
        if c.ndim != 3 or c.shape[0] != self.batch_size:
            raise TokenError(f"frames must be [{self.batch_size}, n_q, frames], got {tuple(c.shape)}")
        c, _ = self.layout.check_codes(c)
        out = [*self._begin(), self._steps(self.layout.vocab.codes_to_ids(c), flush=False)]
        self.frames += c.shape[-1]
        return torch.cat(out, dim=-1)

    def flush(self) -> torch.Tensor:
        """The remaining ids: the delay pattern's closing steps and the end token. Ends the stream."""
        if self.finished:
            raise TokenError("the token stream was already flushed")
        none = torch.zeros(self.batch_size, self.layout.n_q, 0, dtype=torch.long)
        out = [*self._begin(), self._steps(none, flush=True), *self._special(self.layout.vocab.end)]
        self.finished = True
        return torch.cat(out, dim=-1)
