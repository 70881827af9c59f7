"""What the layer-wise methods need from a layer: its inputs in the partly rounded model and its FP32 outputs
(streamed or whole), and its weight as a matrix on the state's grid."""
from __future__ import annotations

import copy

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.streaming import input_batches
from ..evaluators.layerwise import capture_layer_io, layer_io_batches
from ..quant.grid import LayerQuant, QuantState


def grid_of(lq: LayerQuant) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` broadcast to the weight's shape (float32)."""
    shape = (-1,) + (1,) * (lq.codes.dim() - 1)
    return lq.scale.reshape(shape).expand(lq.codes.shape), lq.zero_point.reshape(shape).float().expand(lq.codes.shape)


class LayerIO:
    """One layer's data during :func:`layer_by_layer`: :meth:`batches` streams ``(inputs, targets)`` one batch of
    images at a time (for methods that sum over images: GPTQ's Hessian, the ES's quadratic form), :meth:`whole`
    holds them all (for methods that revisit them: AdaRound). ``inputs``: what enters the layer in the model whose
    earlier layers already carry their new codes; ``targets``: the FP32 layer's outputs on the same images."""

    def __init__(self, qmodel: nn.Module, fmodel: nn.Module, name: str, x):
        self.qmodel, self.fmodel, self.name, self.x = qmodel, fmodel, name, x

    def batches(self):
        return layer_io_batches(self.qmodel, self.fmodel, self.name, input_batches(self.x))

    def inputs(self):
        """The layer's inputs alone, one batch of images at a time (the float model is not run)."""
        for x, _ in layer_io_batches(self.qmodel, self.fmodel, self.name, input_batches(self.x), targets=False):
            yield x
            del x

    def whole(self) -> tuple[torch.Tensor, torch.Tensor]:
        return capture_layer_io(self.qmodel, self.fmodel, self.name, self.x)


def layer_by_layer(fmodel: nn.Module, state: QuantState, x, choose, layers=None,
                   start: dict | None = None, progress: bool = False) -> dict:
    """Choose ``state``'s layer codes one layer at a time, in graph order (``layers``: a subset), starting
    from ``start`` (default: the state's codes). ``choose(name, module, io, codes)`` returns the layer's new
    codes; ``io`` (:class:`LayerIO`) gives the layer's inputs and FP32 targets on images ``x`` (a tensor, or a
    streamed split's first images, :func:`~qevo_lite.core.streaming.first_inputs`), so later layers see and can
    compensate earlier errors; ``codes`` are all layers' current codes. ``progress``: a bar over the layers.
    The float model is not modified. Returns the new codes ``{layer: int16 tensor}``."""
    codes = dict(start) if start is not None else state.codes()
    qmodel = copy.deepcopy(fmodel).eval()
    fmodel = fmodel.eval()
    names = layers or list(state.layers)
    for name in tqdm(names, desc="layers", unit="layer", leave=False, disable=not progress or len(names) < 2):
        state.with_codes(codes).apply(qmodel)
        io = LayerIO(qmodel, fmodel, name, x)
        codes[name] = choose(name, qmodel.get_submodule(name), io, codes).to(torch.int16)
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
