"""``rvqkit tokens`` on a Mimi, DAC or SNAC codes file (:mod:`rvqkit.family_codes`), and ``rvqkit
detokenize`` of those tokens back to a family codes file.

Mimi and DAC codes go through :class:`~rvqkit.tokens.TokenLayout` like EnCodec's (any layout); the token
file's source names the family and keeps the codes file's meta, so ``detokenize tokens.npz codes.npz``
writes the same family codes file back. SNAC codes take the ``orpheus`` layout only
(:mod:`rvqkit.tokens.families`); they are printed or written as ``.txt`` (the token file format holds
TokenLayout settings, which Orpheus's flattening is not).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..errors import RvqkitError
from ..family_codes import FamilyCodes, load_family_codes, load_family_codes_bytes, save_family_codes
from ..tokens.families import family_layouts, family_token_layout, family_tokens
from ..tokens.files import ids_text
from . import err


def tokens_of_family_file(
    input: Path, out: Path | None, json_out: bool, layout: str, n_q: int | None, offset: int, **settings: Any
) -> None:
    """What ``rvqkit tokens`` does with a family codes file (``settings``: TokenLayout's keywords)."""
    fc = load_family_codes(input)
    if layout not in family_layouts(fc.family):
        family_tokens(fc.codes, fc.family, layout, fc.codebook_size)  # raises the one TokenError
    if fc.family == "snac":
        if n_q is not None or any(v not in (None, False) for v in settings.values()):
            raise RvqkitError(
                "the orpheus layout takes no --n-q, --begin, --end, --pad, --delay-pad or --shift"
            )
        if out is not None and out.suffix.lower() != ".txt":
            raise RvqkitError(f"{out}: SNAC's orpheus tokens are written as .txt only")
        ids = family_tokens(fc.codes, "snac", layout, fc.codebook_size, offset or None)
        err.print(f"orpheus: {fc.codes[0].numel()} frames x 7 -> {ids.numel()} ids", highlight=False)
        text = ids_text([ids])
        if json_out:
            text = (
                json.dumps(
                    {"family": "snac", "layout": layout, "offset": offset or None, "ids": ids.tolist()}
                )
                + "\n"
            )
        if out is not None:
            from ..atomic import write_atomic

            write_atomic(out, lambda tmp: tmp.write_text(text))
            err.print(f"wrote {out}", highlight=False)
        else:
            print(text, end="")
        return
    codes = torch.as_tensor(fc.codes).long()
    k = fc.n_q if n_q is None else n_q
    if not 1 <= k <= fc.n_q:
        raise RvqkitError(f"--n-q {k}: {input} holds {fc.n_q} codebooks")
    lay = family_token_layout(fc.family, layout, fc.codebook_size, k, offset, **settings)
    batch = lay.encode(codes[None, :k])
    meta = dataclasses.replace(fc, codes=codes[:k]).meta()  # the codes file the tokens give back
    src = SimpleNamespace(
        model=fc.model,
        weights_sha256=None,
        sample_rate=fc.sample_rate,
        channels=fc.channels,
        bandwidth=meta["bandwidth"],
        family=fc.family,
        family_meta=meta,
        frame_lengths=torch.tensor([codes.shape[1]]),
        lengths=torch.tensor([fc.length]),
        scales=None,
    )
    err.print(
        f"{fc.family} {lay.layout}: {k} codebooks x {codes.shape[1]} frames -> ids {tuple(batch.ids.shape)}; "
        f"audio ids [{lay.vocab.offset}, {lay.vocab.audio_end}), vocab size {lay.vocab_size}",
        highlight=False,
    )
    from .tokens import emit_tokens  # beside the command that owns it (cli/tokens imports this lazily)

    emit_tokens(out, json_out, lay, batch, src)


def detokenize_to_family_file(
    input: Path,
    output: Path,
    lay: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    source: dict[str, Any],
    arrays: dict,
) -> None:
    """What ``rvqkit detokenize`` does with a Mimi/DAC token file: the family codes file of its tokens
    (``output`` ends in ``.npz``; the caller checked overwriting)."""
    if output.suffix.lower() != ".npz":
        raise RvqkitError(
            f"{input} holds {source['family']} tokens: detokenize them to a codes file (.npz), then `rvqkit decode`"
        )
    codes, frame_lengths = lay.decode(ids, mask)
    if codes.shape[0] != 1 or "lengths" not in arrays:
        raise RvqkitError(f"{input}: a {source['family']} token file holds one item and its length")
    m = source["family_codes"]
    frames = int(frame_lengths[0])
    try:
        fc = FamilyCodes(
            family=source["family"],
            codes=codes[0, :, :frames],
            length=int(arrays["lengths"][0]),
            sample_rate=int(m["sample_rate"]),
            channels=int(m["channels"]),
            codebook_size=int(m["codebook_size"]),
            hop_length=int(m["hop_length"]),
            model=str(m["model"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RvqkitError(f"{input}: malformed family codes facts ({type(e).__name__}: {e})") from e
    fc = load_family_codes_bytes(fc.to_bytes(), what=str(input))  # every field checked as a codes file
    save_family_codes(output, fc, overwrite=True)
    err.print(f"wrote {output} ({fc.family}, {fc.n_q} codebooks x {frames} frames)", highlight=False)
