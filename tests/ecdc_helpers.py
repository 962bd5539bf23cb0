"""Helpers for the ``.ecdc`` tests: random-weight LMs saved as Meta checkpoints, and Meta's ``compress``
module pointed at the test models (its own lookups would download the published weights)."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from conftest import save_meta_checkpoint

MODEL_NAMES = {"24": "encodec_24khz", "48": "encodec_48khz"}


def meta_compress_module(meta_encodec):
    """``encodec.compress`` the module (the package re-exports a function of the same name)."""
    assert meta_encodec is not None
    return importlib.import_module("encodec.compress")


def build_meta_lm(meta_encodec, which: str, seed: int, folder: Path):
    """Meta's ``LMModel`` with the sizes ``get_lm_model`` uses, random weights, saved as
    ``encodec_lm_<24|48>khz-<sha256 prefix>.th``. The output layers are scaled up so that the predicted
    distributions are far from uniform (as a trained LM's are) and coding decisions vary."""
    from encodec.model import LMModel

    n_q, frame_rate = (32, 75) if which == "24" else (16, 150)
    torch.manual_seed(seed)
    lm = LMModel(n_q, 1024, num_layers=5, dim=200, past_context=int(3.5 * frame_rate)).eval()
    with torch.no_grad():
        for lin in lm.linears:
            lin.weight.mul_(8.0)
    path = save_meta_checkpoint(lm, folder, f"encodec_lm_{which}khz")
    return lm, path


def point_meta_at(monkeypatch, meta_encodec, model, which: str, lm) -> None:
    """Make Meta's compress/decompress use ``model`` (random weights) and ``lm`` without downloading."""
    name = MODEL_NAMES[which]
    module = meta_compress_module(meta_encodec)
    monkeypatch.setattr(model, "name", name)
    monkeypatch.setattr(model, "get_lm_model", lambda: lm)
    monkeypatch.setitem(module.MODELS, name, lambda *args, **kwargs: model)
