"""Preparing a float model for quantization: batch-norm folding and finding the layers to quantize.

Folding BN into the preceding conv (``w' = w * gamma / sqrt(var + eps)`` per output
channel, bias adjusted to match) must happen *before* quantization, otherwise the
grid is chosen for weights that are later rescaled. We use torch's own helpers:
``torch.fx.experimental.optimization.fuse`` traces the model (works for nested
modules and functional forwards) and fuses every conv->BN pair it sees. Models
that torch.fx cannot trace (data-dependent control flow) fall back to fusing
conv->BN pairs that sit next to each other inside ``nn.Sequential`` containers
with ``torch.nn.utils.fusion.fuse_conv_bn_eval``; a warning names any BN left.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse as fx_fuse
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .layout import QUANTIZABLE

__all__ = ["QUANTIZABLE", "fold_batchnorm", "quantizable_layers", "unquantized_weighted_modules"]
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _fuse_sequential_pairs(model: nn.Module) -> nn.Module:
    """Fallback: fuse Conv2d followed directly by BatchNorm2d inside every nn.Sequential (in place)."""
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        keys = list(module._modules)
        for a, b in zip(keys, keys[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every foldable batch-norm folded into its conv.

    The result computes the same function (up to float rounding) with fewer layers.
    Returns a ``torch.fx.GraphModule`` when the model can be traced, else a copy of the
    original class with BN pairs fused inside ``nn.Sequential`` containers (with a warning).
    """
    model = copy.deepcopy(model).eval()
    try:
        folded = fx_fuse(model, inplace=True)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "use the fallback"
        warnings.warn(f"torch.fx could not trace {type(model).__name__} ({type(exc).__name__}: {exc}); "
                      "folding only conv->BN pairs inside nn.Sequential containers.", stacklevel=2)
        folded = _fuse_sequential_pairs(model)
    left = [n for n, m in folded.named_modules() if isinstance(m, _BN)]
    if left:
        warnings.warn(f"Batch-norm layers left unfolded (they stay in float): {left}", stacklevel=2)
    return folded.eval()


def unquantized_weighted_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules of ``model`` that own a weight matrix or tensor (a parameter of dimension >= 2, e.g.
    ``nn.Bilinear``, ``nn.MultiheadAttention``'s ``in_proj_weight``, ``nn.Embedding``) but are not one of
    :data:`QUANTIZABLE`: their weights stay in float. Norm layers (1-D weights) are not listed."""
    return {n: m for n, m in model.named_modules() if not isinstance(m, QUANTIZABLE)
            and any(p.dim() >= 2 for p in m.parameters(recurse=False))}


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of ``model`` to quantize, by qualified name, in registration order: every
    ``nn.Linear``, ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d`` (:data:`QUANTIZABLE`).

    Grouped and depthwise convs are included. Their weights are quantized per output channel in the
    rows layout (:mod:`qevo_lite.quant.layout`; dimension 1 of a transposed conv's weight).
    Any other module with a weight of dimension >= 2 (:func:`unquantized_weighted_modules`) stays in
    float: one warning per call names them all.
    Raises ValueError when there is no layer to quantize, or when a weight is not finite.
    """
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)}
    left = unquantized_weighted_modules(model)
    listed = ", ".join(f"{n!r} ({type(m).__name__})" for n, m in left.items())
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layer to quantize (nn.Linear, nn.Conv1d/2d/3d or "
                         "nn.ConvTranspose1d/2d/3d)" + (f"; its other weighted modules: {listed}." if left else "."))
    for name, m in layers.items():
        if not torch.isfinite(m.weight).all():
            raise ValueError(f"Layer {name!r} has non-finite weights (NaN or inf); fix the model before quantizing.")
    if left:
        warnings.warn(f"Left in float, not quantized: {listed}. Only nn.Linear, nn.Conv1d/2d/3d and "
                      "nn.ConvTranspose1d/2d/3d weights are quantized.", stacklevel=2)
    return layers
