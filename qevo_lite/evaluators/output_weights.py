"""How much the task loss cares about each output position of each layer: weights for the local fitness.

The layer-wise output error ``sum_c sum_p r_cp^2`` treats every output element alike. The task loss does not: a
second-order expansion of the per-image loss around the FP32 model, with the Fisher (squared-gradient) diagonal
for the Hessian, weights element ``(c, p)`` by ``f_cp = g_cp^2``, ``g`` the gradient of the per-image loss with
respect to the layer's FP32 output (BRECQ's block weighting, here per layer). Because ``g`` is taken before the
following nonlinearity, a ReLU's dead positions (where the FP32 output is negative) get weight 0.

Kept exactly, ``f`` gives each output channel its own quadratic form ``H_c = X diag(f_c) X^T``: ``C_out`` K x K
matrices per layer (for a ResNet-50's 3x3 conv with 512 channels in and out, K = 4,608: 512 x 4,608^2 float64 =
87 GB) and C_out times the accumulation work. Where that is too much, the rank-one factorisation
``f_cp ~ a_c b_p`` serves: channels are independent sub-problems of the local stage, so a per-channel factor
``a_c`` changes no channel's choice and drops out, and what remains is one weight ``b_p = mean_c f_cp`` per
output *position* (image x spatial location). ``H = X diag(b) X^T`` is then one K x K matrix per group, as for
the unweighted error (same memory, same work), and the candidate cost stays exact and O(moves^2) either way.
:func:`output_weights` gives the exact ``f`` for the layers named in ``per_element`` and ``b`` for the others.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def output_weights(fmodel: nn.Module, layers, x: torch.Tensor, targets: torch.Tensor, loss_fn,
                   per_element=(), batch_size: int = 128) -> dict[str, torch.Tensor]:
    """``{layer: weights}`` from the squared gradient ``f`` of the per-image task loss ``loss_fn(outputs, targets)
    -> (n,)`` with respect to the layer's FP32 output on images ``x``: for a layer named in ``per_element``, ``f``
    itself (shaped like the layer's outputs, (N, ...)); for the others its mean over output channels ``b``, one
    per output position ((N, *spatial) for a conv, (N, *leading) for a Linear, whose last dimension is the
    channels). Each is divided by its mean (so the weighted error has the unweighted one's scale; a layer whose
    gradients are all zero gets ones). ``fmodel`` is not modified (a copy runs, in eval mode)."""
    model = copy.deepcopy(fmodel).eval()
    for param in model.parameters():
        param.requires_grad_(True)          # so every layer's output is part of the graph
    device = next(model.parameters()).device
    captured: dict[str, torch.Tensor] = {}

    def hook(name):
        def keep(module, inputs, output):
            captured[name] = output
            return output.clone()       # an in-place op after the layer (ReLU) must not change what we differentiate
        return keep

    handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in layers]
    sums = {name: [] for name in layers}
    try:
        for i in range(0, len(x), batch_size):
            captured.clear()
            with torch.enable_grad():
                out = model(x[i:i + batch_size].to(device))
                loss = loss_fn(out, targets[i:i + batch_size].to(device)).sum()
                names = [n for n in layers if n in captured and captured[n].requires_grad]
                grads = torch.autograd.grad(loss, [captured[n] for n in names], allow_unused=True)
            for name, g in zip(names, grads):
                out_n = captured[name]
                g = torch.zeros_like(out_n) if g is None else g.detach()
                channel_dim = out_n.dim() - 1 if isinstance(model.get_submodule(name), nn.Linear) else 1
                f = g.pow(2).float()
                sums[name].append((f if name in per_element else f.mean(channel_dim)).cpu())
    finally:
        for h in handles:
            h.remove()
    weights = {}
    for name in layers:
        if not sums[name]:
            raise ValueError(f"Layer {name!r} did not run in the model's forward on these inputs.")
        b = torch.cat(sums[name])
        mean = b.mean()
        weights[name] = b / mean if mean > 0 else torch.ones_like(b)
    return weights
