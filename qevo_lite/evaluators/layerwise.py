"""Local (layer-wise) fitness: how far one quantized layer's output is from the FP32 layer's output.

For layer ``L`` with cached inputs ``X`` (what enters ``L`` in the quantized model, so
upstream errors are seen) and targets ``Y`` (what the FP32 layer outputs for the FP32
model's input), fitness = mean squared error ``||f(X; W_q) - Y||^2 / numel(Y)``.

A candidate changes a few codes, so its output differs from the reference output by
``dO = f(X; dW)`` with a sparse ``dW``. Writing the conv as a matrix product on the
unfolded input (``XU``: one row per (input channel, kernel offset)), a change of weight
``(co, j)`` by ``d`` adds ``d * XU[j]`` to output channel ``co``. The new error is

    E' = E + sum over touched channels of (2 <R_co, dO_co> + ||dO_co||^2),  R = O - Y,

computed in ``O(changes x positions)`` instead of a whole layer. Grouped convs map
``j`` into the group's input rows; stride, padding and dilation are handled by ``unfold``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..core.streaming import BATCH, input_batches
from .base import Codes, Evaluation, changed_weights, decode_at
from ..quant.grid import QuantState


def layer_io_batches(qmodel: nn.Module, fmodel: nn.Module, layer: str, batches,
                     targets: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(input of layer in qmodel, output of layer in fmodel)`` for each batch of images in ``batches`` (an
    iterable of tensors, e.g. :func:`~qevo_lite.core.streaming.input_batches`), via hooks: one batch in memory
    (a consumer that drops its references before asking for the next, see :mod:`qevo_lite.core.streaming`).
    ``targets=False`` skips the float model and gives ``(inputs, None)``.

    Both are cloned at once: a following in-place op (``ReLU(inplace=True)``) would overwrite them."""
    device = next(qmodel.parameters()).device
    for x in batches:
        xs, ys = [], []
        h1 = qmodel.get_submodule(layer).register_forward_hook(lambda m, i, o: xs.append(i[0].detach().clone()))
        h2 = fmodel.get_submodule(layer).register_forward_hook(lambda m, i, o: ys.append(o.detach().clone()))
        try:
            with torch.no_grad():
                qmodel(x.to(device))
                if targets:
                    fmodel(x.to(device))
        finally:
            h1.remove()
            h2.remove()
        del x
        pair = _joined(xs), _joined(ys)
        del xs, ys
        yield pair
        del pair


def _joined(parts: list) -> torch.Tensor | None:
    """What the hook captured in one forward: None (nothing), the one tensor, or the calls' tensors joined."""
    return None if not parts else parts[0] if len(parts) == 1 else torch.cat(parts)


def capture_layer_io(qmodel: nn.Module, fmodel: nn.Module, layer: str, x: torch.Tensor,
                     batch_size: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """(input of ``layer`` in ``qmodel``, output of ``layer`` in ``fmodel``) for images ``x`` (a tensor, or a
    streamed split's first images, :func:`~qevo_lite.core.streaming.first_inputs`), all in memory."""
    xs, ys = zip(*layer_io_batches(qmodel, fmodel, layer, input_batches(x, batch_size)))
    return torch.cat(xs).contiguous(), torch.cat(ys).contiguous()


class LayerwiseEvaluator:
    """Evaluator with the local fitness of one layer (same interface as the global evaluators).

    Args:
        module: the layer (Conv2d with zero padding, or Linear) whose float weights decode the reference.
        name: its qualified name in ``state``.
        state: the RTN :class:`QuantState`.
        x: cached layer inputs, (N, C_in, H, W) or (N, in_features).
        y: FP32 layer outputs to match, (N, C_out, H', W') or (N, out_features).
    """

    incremental = True

    def __init__(self, module: nn.Module, name: str, state: QuantState, x: torch.Tensor, y: torch.Tensor,
                 reference: Codes | None = None):
        self.module, self.name, self.state = module, name, state
        self.reference: Codes = dict(reference) if reference is not None else state.codes()
        self.evaluations = 0
        w = state.layers[name]
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros" or isinstance(module.padding, str):
                raise ValueError(f"{name}: only zero-padded convs with numeric padding are supported locally.")
            xu = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # (N, Cin*k*k, L)
            self.xu = xu.permute(1, 0, 2).reshape(xu.shape[1], -1).contiguous()  # (Cin*k*k, N*L)
            target = y.permute(1, 0, 2, 3).reshape(y.shape[1], -1)  # (Cout, N*L)
            self.per_out = w.codes[0].numel()                         # Cin/groups * k * k
            self.out_per_group = module.out_channels // module.groups
        elif isinstance(module, nn.Linear):
            self.xu = x.reshape(-1, x.shape[-1]).t().contiguous()    # (in, N)
            target = y.reshape(-1, y.shape[-1]).t()                  # (out, N)
            self.per_out, self.out_per_group = x.shape[-1], module.out_features
        else:
            raise ValueError(f"{name}: local fitness supports Conv2d and Linear, not {type(module).__name__}.")
        out = self._dense(self._decode_all(self.reference[name]))
        self.residual = (out - target).contiguous()   # R = O - Y, (Cout, positions)
        self.numel = target.numel()
        self.error = float(self.residual.pow(2).sum())
        self.reference_eval = Evaluation(self.error / self.numel, None, True, None, self.numel)

    def _decode_all(self, codes: torch.Tensor) -> torch.Tensor:
        lq = self.state.layers[self.name]
        bshape = (-1,) + (1,) * (codes.dim() - 1)
        return (lq.scale.reshape(bshape) * (codes.float() - lq.zero_point.reshape(bshape).float())).to(self.xu.device)

    def _dense(self, weight: torch.Tensor) -> torch.Tensor:
        """Layer output (Cout, positions) for a full weight, bias included, via the unfolded input."""
        out_rows = []
        w2 = weight.reshape(weight.shape[0], -1)
        groups = weight.shape[0] // self.out_per_group
        for gi in range(groups):
            rows = slice(gi * self.out_per_group, (gi + 1) * self.out_per_group)
            cols = slice(gi * self.per_out, (gi + 1) * self.per_out)
            out_rows.append(w2[rows] @ self.xu[cols])
        out = torch.cat(out_rows)
        if self.module.bias is not None:
            out = out + self.module.bias.detach().reshape(-1, 1)
        return out

    def _delta(self, idx: torch.Tensor, new: torch.Tensor, old: torch.Tensor):
        """(touched output channels, dO rows (touched, positions)) for codes changed at flat ``idx``."""
        dev = self.xu.device
        d = (decode_at(self.state, self.name, idx, new) - decode_at(self.state, self.name, idx, old)).to(dev)
        idx = idx.to(dev)
        co = idx // self.per_out
        j = (co // self.out_per_group) * self.per_out + idx % self.per_out
        touched, local = torch.unique(co, return_inverse=True)
        delta = torch.zeros(len(touched), self.xu.shape[1], device=dev)
        delta.index_add_(0, local, self.xu[j] * d.unsqueeze(1))
        return touched, delta

    def evaluate(self, candidate: Codes, early_reject: bool = False, z: float = 2.0) -> Evaluation:
        self.evaluations += 1
        changes = changed_weights(self.state, self.reference, candidate)
        if set(changes) - {self.name}:
            raise ValueError(f"A LayerwiseEvaluator for {self.name!r} can only score changes to that layer.")
        if not changes:
            return self.reference_eval
        idx, new = changes[self.name]
        touched, delta = self._delta(idx, new, self.reference[self.name].reshape(-1)[idx])
        r = self.residual[touched]
        err = self.error + float((2 * r * delta + delta * delta).sum())
        return Evaluation(err / self.numel, None, True, None, self.numel)

    def set_reference(self, candidate: Codes, evaluation: Evaluation | None = None) -> None:
        changes = changed_weights(self.state, self.reference, candidate)
        if self.name in changes:
            idx, new = changes[self.name]
            touched, delta = self._delta(idx, new, self.reference[self.name].reshape(-1)[idx])
            self.residual[touched] += delta
            self.error = float(self.residual.pow(2).sum())
        self.reference = candidate
        self.reference_eval = Evaluation(self.error / self.numel, None, True, None, self.numel)

    @contextmanager
    def applied(self, candidate: Codes):
        """The layer module with ``candidate``'s weights written in (restored afterwards)."""
        old = self.module.weight.detach().clone()
        with torch.no_grad():
            self.module.weight.copy_(self._decode_all(candidate[self.name]).to(old))
        try:
            yield self.module
        finally:
            with torch.no_grad():
                self.module.weight.copy_(old)
