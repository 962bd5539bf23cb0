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
            raise TokenError(f"malformed token layout settings ({e})") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenLayout) and self.settings() == other.settings()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        s = self.settings()
        return "TokenLayout(" + ", ".join(f"{k}={v!r}" for k, v in s.items()) + ")"

    # -- encode ----------------------------------------------------------------------------------------
    def _check_codes(self, codes: Any, frame_lengths: Any) -> tuple[torch.Tensor, list[int]]:
        c = as_long(codes, "codes")
        if c.ndim == 2:
            c = c[None]
        if c.ndim != 3:
            raise TokenError(f"codes must be [batch, n_q, frames] or [n_q, frames], got {tuple(c.shape)}")
        if c.shape[1] < self.n_q:
            raise TokenError(f"the layout takes {self.n_q} codebooks, the codes hold {c.shape[1]}")
        c = c[:, : self.n_q]
        if frame_lengths is None:
            lengths = [c.shape[-1]] * c.shape[0]
        else:
            lengths = [int(n) for n in as_long(frame_lengths, "frame_lengths").reshape(-1)]
            if len(lengths) != c.shape[0]:
                raise TokenError(f"{len(lengths)} frame lengths given for {c.shape[0]} items")
        in_range = not c.numel() or (int(c.min()) >= 0 and int(c.max()) < self.codebook_size)
        for b, n in enumerate(lengths):
            if not 0 <= n <= c.shape[-1]:
                raise TokenError(f"frame length {n} outside [0, {c.shape[-1]}]", item=b)
            if in_range:
                continue
            bad = ((c[b, :, :n] < 0) | (c[b, :, :n] >= self.codebook_size)).nonzero()
            if len(bad):
                k, t = (int(i) for i in bad[bad[:, 1].argmin()])
                raise TokenError(
                    f"code {int(c[b, k, t])} of codebook {k} at frame {t} is outside [0, {self.codebook_size})",
                    item=b,
                )
        return c, lengths

    def encode_item(self, codes: torch.Tensor) -> torch.Tensor:
        """Ids of one item's codes ``[n_q, frames]`` (already checked): ``[length]`` or ``[n_q, length]``."""
        v = self.vocab
        ids = v.codes_to_ids(codes)
        if self.layout == "flatten":
            body = ids.t().reshape(-1)
        elif self.layout == "codebook":
            body = ids.reshape(-1)
        elif self.layout == "parallel":
            body = ids
        else:
            body = delay_steps(ids, torch.tensor(v.delay_pad), flush=True)
        return self._wrap(body, begin=True, end=True)

    def _wrap(self, body: torch.Tensor, begin: bool, end: bool) -> torch.Tensor:
        """Add begin / end positions (a full step of them for multi-stream layouts)."""
        v = self.vocab
        shape = (self.n_q, 1) if self.multi_stream else (1,)
        parts = [body]
        if begin and v.begin is not None:
            parts.insert(0, torch.full(shape, v.begin, dtype=torch.long))
        if end and v.end is not None:
            parts.append(torch.full(shape, v.end, dtype=torch.long))
        return torch.cat(parts, dim=-1)

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
        c, lengths = self._check_codes(codes, frame_lengths)
        items = [self.encode_item(c[b, :, :n]) for b, n in enumerate(lengths)]
        return self.pad_items(items)

    def pad_items(self, items: Sequence[torch.Tensor]) -> TokenBatch:
        """Stack per-item ids into a padded :class:`TokenBatch` (padding on ``padding_side``)."""
        longest = max((it.shape[-1] for it in items), default=0)
        shape = (len(items), self.n_q, longest) if self.multi_stream else (len(items), longest)
        ids = torch.full(shape, self.vocab.pad, dtype=torch.long)
        mask = torch.zeros(len(items), longest, dtype=torch.bool)
        for b, it in enumerate(items):
            n = it.shape[-1]
            sl = slice(0, n) if self.padding_side == "right" else slice(longest - n, longest)
            ids[b, ..., sl] = it
            mask[b, sl] = True
        return TokenBatch(ids, mask)

    # -- decode ----------------------------------------------------------------------------------------
    def decode(self, ids: Any, attention_mask: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[batch, n_q, frames]`` (zero past each item's end) and ``frame_lengths`` ``[batch]`` from
        ids as :meth:`encode` makes them. Without ``attention_mask``, an item ends at its trailing pad ids
        (leading ones with left padding). A :class:`TokenBatch` may be passed as ``ids`` (its mask is used).
        Raises :class:`TokenError` at the first token that does not fit."""
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
        if attention_mask is not None:
            m = attention_mask
            m = m.detach().cpu() if isinstance(m, torch.Tensor) else torch.as_tensor(np.asarray(m))
            if m.ndim == 1:
                m = m[None]
            if m.shape != (t.shape[0], t.shape[-1]):
                raise TokenError(f"attention mask {tuple(m.shape)} does not match ids {tuple(t.shape)}")
            if m.is_floating_point() or m.is_complex():
                raise TokenError(f"attention mask must be bool (or 0/1 integers), got dtype {m.dtype}")
            if m.dtype != torch.bool and m.numel() and (int(m.min()) < 0 or int(m.max()) > 1):
                raise TokenError("attention mask must hold only 0 and 1")
            m = m.bool()
        else:
            m = self._mask_from_pad(t)
        items = []
        for b in range(t.shape[0]):
            pos = m[b].nonzero().reshape(-1)
            items.append(self.decode_item(t[b].index_select(-1, pos), b, pos))
        frames = torch.tensor([it.shape[-1] for it in items], dtype=torch.long)
        codes = torch.zeros(t.shape[0], self.n_q, int(frames.max()) if len(items) else 0, dtype=torch.long)
        for b, it in enumerate(items):
            codes[b, :, : it.shape[-1]] = it
        return codes, frames

    def _mask_from_pad(self, t: torch.Tensor) -> torch.Tensor:
        is_pad = t == self.vocab.pad
        if self.multi_stream:
            is_pad = is_pad.all(dim=1)
        if self.padding_side == "left":
            return ~is_pad.long().cumprod(-1).bool()
        return ~is_pad.long().flip(-1).cumprod(-1).flip(-1).bool()

    def decode_item(self, seq: torch.Tensor, item: int = 0, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Codes ``[n_q, frames]`` of one item's ids (``[length]`` or ``[n_q, length]``, no padding).
        ``pos`` maps each column to its position in the caller's ids, for error messages."""
        v = self.vocab
        n = seq.shape[-1]
        pos = torch.arange(n) if pos is None else pos
        streams = self.multi_stream

        def fail(col: int, message: str, stream: int | None = None) -> TokenError:
            return TokenError(message, item=item, position=int(pos[col]) if col < n else n, stream=stream)

        def expect(col: int, token: int, what: str) -> None:
            got = seq[:, col] if streams else seq[col : col + 1]
            bad = (got != token).nonzero().reshape(-1)
            if len(bad):
                k = int(bad[0])
                found = int(got[k])
                raise fail(
                    col,
                    f"expected the {what} token (id {token}), found {v.describe(found)}",
                    k if streams else None,
                )

        start, stop = 0, n
        if v.begin is not None:
            if n == 0:
                raise TokenError("empty sequence: the begin token is missing", item=item)
            expect(0, v.begin, "begin")
            start = 1
        if v.end is not None:
            if stop - start < 1:
                raise fail(n, "the end token is missing (the sequence stops after the begin token)")
            expect(n - 1, v.end, "end")
            stop = n - 1
        body = seq[..., start:stop]
        body_pos = torch.arange(start, stop)
        nb = body.shape[-1]
        if self.layout in ("flatten", "codebook"):
            if nb % self.n_q:
                whole = nb // self.n_q
                col = start + whole * self.n_q if self.layout == "flatten" else stop
                raise fail(
                    col,
                    f"{nb} audio tokens are not whole frames of {self.n_q} codebooks "
                    f"({whole} frames and {nb % self.n_q} tokens left over)",
                )
            frames = nb // self.n_q
            if self.layout == "flatten":
                grid, grid_pos = body.view(frames, self.n_q).t(), body_pos.view(frames, self.n_q).t()
            else:
                grid, grid_pos = body.view(self.n_q, frames), body_pos.view(self.n_q, frames)
        elif self.layout == "parallel":
            frames = nb
            grid, grid_pos = body, body_pos.expand(self.n_q, nb)
        else:
            frames = nb - (self.n_q - 1)
            if frames < 0:
                raise fail(
                    stop,
                    f"{nb} audio steps are fewer than the {self.n_q - 1} that the delay pattern of {self.n_q} codebooks adds",
                )
            k = torch.arange(self.n_q)[:, None]
            s = torch.arange(nb)[None, :]
            filler = (s < k) | (s - k >= frames)
            pads = torch.tensor(v.delay_pad)[:, None].expand_as(body)
            wrong = (filler & (body != pads)).nonzero()
            if len(wrong):
                kk, ss = (int(i) for i in wrong[wrong[:, 1].argmin()])
                found = int(body[kk, ss])
                raise fail(
                    start + ss,
                    f"broken delay pattern: expected codebook {kk}'s delay pad (id {v.delay_pad[kk]}), "
                    f"found {v.describe(found)}",
                    kk,
                )
            idx = torch.arange(frames)[None, :] + k
            grid = body.gather(1, idx)
            grid_pos = idx + start
        codes = v.ids_to_codes(grid)
        bad = ((codes < 0) | (codes >= self.codebook_size)).nonzero()
        if len(bad):
            kk, tt = (int(i) for i in bad[grid_pos[bad[:, 0], bad[:, 1]].argmin()])
            found = int(grid[kk, tt])
            lo, hi = v.code_range(kk)
            raise fail(
                int(grid_pos[kk, tt]),
                f"{v.describe(found)} where a code of codebook {kk} belongs (ids [{lo}, {hi}))",
                kk if streams else None,
            )
        return codes

    # -- streaming -------------------------------------------------------------------------------------
    def streamer(self, batch_size: int = 1) -> TokenStreamer:
        """A :class:`TokenStreamer` that emits this layout's ids frame by frame."""
        return TokenStreamer(self, batch_size)


def delay_steps(ids: torch.Tensor, delay_pad: torch.Tensor, flush: bool, tail: torch.Tensor | None = None):
    """The delay pattern's steps for frames ``ids`` ``[..., n_q, t]``.

    Stream ``k`` at step ``s`` holds frame ``s - k``. ``tail`` ``[..., n_q, n_q-1]`` holds the previous
    ``n_q - 1`` frames (delay pads before the first frame). Without ``flush`` the result has ``t`` steps
    (one per new frame); with it, ``n_q - 1`` more steps that finish the last frames. Returns the steps,
    or ``(steps, new_tail)`` when ``tail`` is given.
    """
    n_q = ids.shape[-2]
    fill = delay_pad.view(*([1] * (ids.ndim - 2)), n_q, 1)
    first = fill.expand(*ids.shape[:-1], n_q - 1) if tail is None else tail
    parts = [first, ids]
    if flush:
        parts.append(fill.expand(*ids.shape[:-1], n_q - 1))
    full = torch.cat(parts, dim=-1)
    steps = ids.shape[-1] + (n_q - 1 if flush else 0)
    k = torch.arange(n_q)[:, None]
    idx = torch.arange(steps)[None, :] + (n_q - 1) - k  # [n_q, steps]: column of frame s - k
    out = full.gather(-1, idx.expand(*ids.shape[:-1], steps))
    if tail is None:
        return out
    return out, full[..., full.shape[-1] - (n_q - 1) :]


class TokenStreamer:
    """Emit token ids frame by frame, as an encoder produces codes, for a batch of equal-length items.

    ``push(frames)`` takes codes ``[batch, n_q', t]`` (or one frame ``[batch, n_q']``) and returns the ids
    that are complete: ``[batch, n]`` or ``[batch, n_q, n]`` steps. ``flush()`` returns the rest (the
    delay pattern's last ``n_q - 1`` steps, the end token). The concatenation of everything emitted equals
    :meth:`TokenLayout.encode` of all the frames. The ``codebook`` layout cannot stream (it needs the
    last frame before its second token).
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
        self._delay_pad = torch.tensor(v.delay_pad) if v.delay_pad else None
        self._tail = (
            self._delay_pad.view(1, -1, 1).expand(batch_size, v.n_q, v.n_q - 1).clone()
            if self._delay_pad is not None
            else None
        )

    def _begin(self) -> list[torch.Tensor]:
        if self.started:
            return []
        self.started = True
        token = self.layout.vocab.begin
        if token is None:
            return []
        shape = (self.batch_size, self.layout.n_q, 1) if self.layout.multi_stream else (self.batch_size, 1)
        return [torch.full(shape, token, dtype=torch.long)]

    def _empty(self) -> torch.Tensor:
        if self.layout.multi_stream:
            return torch.zeros(self.batch_size, self.layout.n_q, 0, dtype=torch.long)
        return torch.zeros(self.batch_size, 0, dtype=torch.long)

    def push(self, frames: Any) -> torch.Tensor:
        """Ids made complete by these code frames ``[batch, n_q', t]`` or ``[batch, n_q']``."""
        if self.finished:
            raise TokenError("the token stream was flushed; start a new streamer")
        c = as_long(frames, "codes")
        if c.ndim == 2:
            c = c[..., None]
        if c.ndim != 3 or c.shape[0] != self.batch_size:
            raise TokenError(f"frames must be [{self.batch_size}, n_q, frames], got {tuple(c.shape)}")
        c, _ = self.layout._check_codes(c, None)
        ids = self.layout.vocab.codes_to_ids(c)
        out = self._begin()
        if self.layout.layout == "flatten":
            out.append(ids.transpose(1, 2).reshape(self.batch_size, -1))
        elif self.layout.layout == "parallel":
            out.append(ids)
        else:
            assert self._delay_pad is not None
            steps, self._tail = delay_steps(ids, self._delay_pad, flush=False, tail=self._tail)
            out.append(steps)
        self.frames += c.shape[-1]
        return torch.cat([self._empty(), *out], dim=-1)

    def flush(self) -> torch.Tensor:
        """The remaining ids: the delay pattern's closing steps and the end token. Ends the stream."""
        if self.finished:
            raise TokenError("the token stream was already flushed")
        out = self._begin()
        if self._delay_pad is not None:
            none = torch.zeros(self.batch_size, self.layout.n_q, 0, dtype=torch.long)
            out.append(delay_steps(none, self._delay_pad, flush=True, tail=self._tail)[0])
        token = self.layout.vocab.end
        if token is not None:
            shape = (
                (self.batch_size, self.layout.n_q, 1) if self.layout.multi_stream else (self.batch_size, 1)
            )
            out.append(torch.full(shape, token, dtype=torch.long))
        self.finished = True
        return torch.cat([self._empty(), *out], dim=-1)
