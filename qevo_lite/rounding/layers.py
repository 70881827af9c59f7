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


def layer_by_layer(fmodel: nn.Module, state: QuantState, x: torch.Tensor, choose, layers=None,
                   start: dict | None = None) -> dict:
    """Choose ``state``'s layer codes one layer at a time, in graph order (``layers``: a subset), starting
    from ``start`` (default: the state's codes). ``choose(name, module, inputs, targets, codes)`` returns the
    layer's new codes; ``inputs`` (what enters the layer in the model whose earlier layers already carry their
    new codes, so later layers see and can compensate earlier errors) and ``targets`` (the FP32 layer's
    outputs on the FP32 model's inputs) are computed on images ``x``; ``codes`` are all layers' current codes.
    The float model is not modified. Returns the new codes ``{layer: int16 tensor}``."""
    codes = dict(start) if start is not None else state.codes()
    qmodel = copy.deepcopy(fmodel).eval()
    fmodel = fmodel.eval()
    for name in (layers or list(state.layers)):
        state.with_codes(codes).apply(qmodel)
        inputs, targets = capture_layer_io(qmodel, fmodel, name, x)
        codes[name] = choose(name, qmodel.get_submodule(name), inputs, targets, codes).to(torch.int16)
    return codes


def layer_output_errors(fmodel: nn.Module, state: QuantState, x: torch.Tensor) -> dict:
    """``{layer: mean squared error of its output}`` of ``state``'s model against the FP32 model on images
    ``x``, each layer fed what enters it in ``state``'s model (errors of earlier layers included): the error
    the layer-wise methods (GPTQ, AdaRound, the ES's local stage) reduce."""
    qmodel = state.to_model(fmodel).eval()
    out = {}
    for name in state.layers:
        inputs, targets = capture_layer_io(qmodel, fmodel.eval(), name, x)
        with torch.no_grad():
            out[name] = float((qmodel.get_submodule(name)(inputs) - targets).pow(2).mean())
    return out
