"""What both rounding peers need from a layer: its inputs in the partly rounded model, its FP32 outputs,
and its weight as a matrix on the state's grid."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..evaluators.layerwise import capture_layer_io
from ..quant.grid import LayerQuant, QuantState


def grid_of(lq: LayerQuant) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` broadcast to the weight's shape (float32)."""
    shape = (-1,) + (1,) * (lq.codes.dim() - 1)
    return lq.scale.reshape(shape).expand(lq.codes.shape), lq.zero_point.reshape(shape).float().expand(lq.codes.shape)


def layer_by_layer(fmodel: nn.Module, state: QuantState, x: torch.Tensor, choose) -> QuantState:
    """Round ``state``'s layers one at a time, in graph order. ``choose(name, module, inputs, targets)``
    returns the layer's new int16 codes; ``inputs`` (what enters the layer in the model whose earlier
    layers already carry their new codes, so later layers see and can compensate earlier errors) and
    ``targets`` (the FP32 layer's outputs on the FP32 model's inputs) are computed on images ``x``.
    The float model is not modified. Returns the new state (same grid and scales)."""
    fmodel = fmodel.eval()
    qmodel = copy.deepcopy(fmodel).eval()
    codes = state.codes()
    for name in state.layers:
        state.with_codes(codes).apply(qmodel)
        inputs, targets = capture_layer_io(qmodel, fmodel, name, x)
        codes[name] = choose(name, qmodel.get_submodule(name), inputs, targets).to(torch.int16)
    return state.with_codes(codes)
