"""What the entropy coder needs of a language model: a :class:`Predictor`.

The bitstream asks it, frame by frame, for the probabilities of the next frame's codes; it never imports
a network. :class:`rvqkit.lm.EntropyLM` (Meta's LM) is the one rvqkit ships.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from ..config import CodecConfig
from .header import BitstreamError, EcdcHeader


class Predictor(Protocol):
    """A model of the next frame's codes given the previous one, with explicit state."""

    def initial_state(self) -> Any:
        """The state at a segment's start (the coder resets the model at each segment)."""
        ...

    def step(self, previous: torch.Tensor | None, state: Any, n_q: int) -> tuple[torch.Tensor, Any]:
        """Probabilities ``[n_q, codebook_size]`` of the next frame's codes, given the previous frame's
        codes ``[n_q]`` (``None`` at a segment's start), and the state after it."""
        ...

    def check_codec(self, config: CodecConfig) -> None:
        """Raise ``ValueError`` (saying why) unless this predicts the codes of the model ``config``."""
        ...

    def decode_hint(self) -> str:
        """Appended to the error when a stream does not decode: the likely cause and its fix."""
        ...


def check_predictor(lm: Predictor | None, header: EcdcHeader) -> Predictor:
    """The predictor, checked to be one for the header's model."""
    if lm is None:
        raise BitstreamError(
            "this .ecdc stream is entropy-coded with the LM; give the LM checkpoint "
            f"(encodec_lm_{header.model.split('_')[-1]}-*.th, as lm=PATH)"
        )
    try:
        lm.check_codec(header.config)
    except ValueError as e:
        raise BitstreamError(str(e)) from e
    return lm
