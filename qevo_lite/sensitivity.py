"""Layer sensitivity: how much the search loss rises when one layer alone is quantized."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .data import Split
from .evaluate import evaluate
from .quant import QuantState


def layer_sensitivity(fmodel: nn.Module, state: QuantState, search: Split) -> dict:
    """``{layer: search loss with only that layer quantized - FP32 search loss}`` (nats), most sensitive first."""
    base = evaluate(fmodel, search)["loss"]
    model = copy.deepcopy(fmodel)
    out = {}
    for name, lq in state.layers.items():
        weight = model.get_submodule(name).weight
        original = weight.detach().clone()
        with torch.no_grad():
            weight.copy_(lq.dequantize().to(weight))
        out[name] = evaluate(model, search)["loss"] - base
        with torch.no_grad():
            weight.copy_(original)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
