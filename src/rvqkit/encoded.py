"""The encoded value (codes plus what is needed to decode them) and its safe ``.npz`` file format.

The file is a NumPy ``.npz`` with no pickled objects (read with ``allow_pickle=False``):
``codes`` int16 ``[batch, n_q, frames]``, ``lengths`` int64 ``[batch]`` (samples at the model rate),
``scales`` float32 ``[batch, segments]`` (48 kHz model only) and ``meta``, UTF-8 JSON as uint8 bytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CodesError

FORMAT = "rvqkit-codes"
FORMAT_VERSION = 1


@dataclass
class Encoded:
    """Codes of a batch of signals and the facts needed to decode them.

    Attributes:
        codes: int64 ``[batch, n_q, frames]``; items shorter than the longest are zero-padded past
            ``frame_lengths``.
        scales: float ``[batch, segments]`` per-segment RMS scales (48 kHz model), else None.
        lengths: int64 ``[batch]`` original lengths in samples at ``sample_rate``.
        frame_lengths: int64 ``[batch]`` valid code frames per item.
        sample_rate: model sample rate in Hz.
        channels: model channel count.
        bandwidth: kbps the codes carry (n_q × 10 bits × frame rate).
        model: model name, e.g. ``encodec_24khz``.
        weights_sha256: sha256 of the weights file the codes were made with, if known.
    """

    codes: torch.Tensor
    scales: torch.Tensor | None
    lengths: torch.Tensor
    frame_lengths: torch.Tensor
    sample_rate: int
    channels: int
    bandwidth: float
    model: str
    weights_sha256: str | None = None

    @property
    def n_q(self) -> int:
        return int(self.codes.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.codes.shape[0])

    def mask(self) -> torch.Tensor:
        """Boolean ``[batch, frames]``: True where a frame holds real codes."""
        frames = torch.arange(self.codes.shape[-1], device=self.codes.device)
        return frames[None, :] < self.frame_lengths.to(self.codes.device)[:, None]

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": self.model,
            "weights_sha256": self.weights_sha256,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "bandwidth": self.bandwidth,
            "n_q": self.n_q,
        }

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write the codes file (``.npz``); refuses to replace an existing file unless ``overwrite``."""
        p = Path(path)
        if p.exists() and not overwrite:
            raise CodesError(f"{p} exists; pass --overwrite to replace it")
        arrays: dict[str, np.ndarray] = {
            "codes": self.codes.cpu().numpy().astype(np.int16),
            "lengths": self.lengths.cpu().numpy().astype(np.int64),
            "frame_lengths": self.frame_lengths.cpu().numpy().astype(np.int64),
            "meta": np.frombuffer(json.dumps(self.meta()).encode(), dtype=np.uint8),
        }
        if self.scales is not None:
            arrays["scales"] = self.scales.cpu().numpy().astype(np.float32)
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Encoded:
        """Read a codes file written by :meth:`save`; malformed files raise :class:`CodesError`."""
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise CodesError(f"{p}: no such codes file") from None
        except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
            raise CodesError(f"{p}: not a readable rvqkit codes file ({e})") from None
        try:
            meta = json.loads(bytes(arrays["meta"].astype(np.uint8)).decode())
            if meta.get("format") != FORMAT:
                raise CodesError(f"{p}: not an rvqkit codes file")
            if meta.get("version") != FORMAT_VERSION:
                raise CodesError(f"{p}: codes file version {meta.get('version')} is not supported")
            codes = arrays["codes"]
            lengths = arrays["lengths"]
            frame_lengths = arrays["frame_lengths"]
        except CodesError:
            raise
        except (KeyError, ValueError, UnicodeDecodeError, AttributeError) as e:
            raise CodesError(f"{p}: corrupt codes file ({e})") from None
        if codes.ndim != 3 or lengths.shape != (codes.shape[0],) or frame_lengths.shape != (codes.shape[0],):
            raise CodesError(f"{p}: corrupt codes file (inconsistent array shapes)")
        if codes.shape[1] != meta.get("n_q"):
            raise CodesError(f"{p}: corrupt codes file (n_q {meta.get('n_q')} vs codes {codes.shape[1]})")
        scales = arrays.get("scales")
        return cls(
            codes=torch.from_numpy(codes.astype(np.int64)),
            scales=None if scales is None else torch.from_numpy(scales.astype(np.float32)),
            lengths=torch.from_numpy(lengths),
            frame_lengths=torch.from_numpy(frame_lengths),
            sample_rate=int(meta["sample_rate"]),
            channels=int(meta["channels"]),
            bandwidth=float(meta["bandwidth"]),
            model=str(meta["model"]),
            weights_sha256=meta.get("weights_sha256"),
        )
