"""Layer sensitivity: how much the search loss rises when one layer alone is quantized."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..core.data import Split
from ..core.evaluate import evaluate
from .grid import QuantState
from .layout import from_rows


def layer_sensitivity(fmodel: nn.Module, state: QuantState, search: Split, score=None) -> dict:
    """``{layer: search loss with only that layer quantized - FP32 search loss}``, most sensitive first.

    ``score``: ``(model, split) -> float`` loss (default: the classification cross-entropy in nats of
    :func:`qevo_lite.core.evaluate.evaluate`; e.g. a reconstruction MSE for an autoencoder)."""
    if score is None:
        score = lambda m, split: evaluate(m, split)["loss"]  # noqa: E731
    base = score(fmodel, search)
    model = copy.deepcopy(fmodel)
    out = {}
    for name, lq in state.layers.items():
        module = model.get_submodule(name)
        weight = module.weight
        original = weight.detach().clone()
        with torch.no_grad():
            weight.copy_(from_rows(lq.dequantize(), module).to(weight))
        out[name] = score(model, search) - base
        with torch.no_grad():
            weight.copy_(original)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
