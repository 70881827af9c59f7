"""Fitness of a quantized model on the search split, and the evaluators that compute it.

A *candidate* is a dict ``{layer name: int16 codes}`` (the codes of every quantized
layer; tensors shared with its parent where nothing changed). An evaluator holds one
model whose weights decode its *reference* candidate (the ES parent). To evaluate a
candidate it writes only the weights that differ from the reference, runs the
network, and writes the old weights back: no model copies.

Evaluators (all minimise a per-sample loss averaged over the search split):

* :class:`FullEvaluator` -- the straightforward one: the whole network on every image.
* :class:`IncrementalEvaluator` -- the fast one. It traces the network with
  ``torch.fx`` and caches, for the reference weights, the activations that enter
  the part of the graph downstream of the changed layers; only that part is re-run.
  Optional *early rejection* compares the candidate with the reference chunk by
  chunk on the same images (a paired test) and stops evaluating a clear loser.
  Networks that torch.fx cannot trace fall back to full evaluation, with a warning.
* :class:`LayerwiseEvaluator` (in :mod:`qevo_lite.evaluators.layerwise`) -- the local fitness.

Loss functions map ``(outputs, targets)`` of a chunk to per-sample losses ``(n,)``.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import torch
from torch import nn

from ..core.data import Split
from ..core.evaluate import to_fast_layout
from ..quant.grid import QuantState
from ..quant.layout import weight_positions
from .base import Codes, Evaluation, changed_weights, decode_at, resolve_loss


def _fast_layout(model: nn.Module) -> nn.Module:
    """``to_fast_layout(model)``, except for models with a 5-D parameter or buffer (a Conv3d or
    ConvTranspose3d weight), which ``channels_last`` cannot hold: those keep their layout."""
    if any(t.dim() == 5 for t in (*model.parameters(), *model.buffers())):
        return model
    return to_fast_layout(model)


class FullEvaluator:
    """Fitness of candidates by running the whole network on every search image.

    Args:
        model: the (BN-folded) float model. The evaluator works on its own copy (moved to
            ``device``, quantized layers decoding the state's codes); ``model`` is left as it was.
        state: the RTN :class:`QuantState` (grid, scales, float weights).
        search: the search split (images ``x``, targets ``y``; a loss that scores against the inputs, such as
            ``"mse"``, compares with the images: :data:`~qevo_lite.evaluators.base.LOSSES`).
        loss: a name in :data:`~qevo_lite.evaluators.base.LOSSES` or a callable ``(outputs, targets) -> (n,)``.
        metric: a callable ``(outputs, targets) -> (n,)`` averaged for reporting, or None.
        chunk_size: images per forward pass (default: 256 on the CPU, 2048 on a GPU, the faster
            choices measured on 2 CPU cores and on an H200).
    """

    incremental = False

    def __init__(self, model: nn.Module, state: QuantState, search: Split, loss="cross_entropy", metric="default",
                 chunk_size: int | None = None, device=None, _copy: bool = True):
        spec = resolve_loss(loss)
        self.loss_fn = spec.fn
        self.metric_fn = spec.metric if metric == "default" else metric
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = _fast_layout((copy.deepcopy(model) if _copy else model).eval().to(self.device))
        if chunk_size is None:
            chunk_size = 2048 if self.device.type == "cuda" else 256
        self.state = state
        targets = spec.targets(search)
        self.chunks = [(to_fast_layout(search.x[i:i + chunk_size].to(self.device)),
                        targets[i:i + chunk_size].to(self.device)) for i in range(0, len(search), chunk_size)]
        self.num_samples = len(search)
        self.reject_min_samples = min(256, len(search) // 4)  # early rejection looks at least this many first
        self.evaluations = 0
        self.reference: Codes = state.codes()
        state.apply(self.model)
        self.reference_eval = self._run({}, None)

    # -- weights --------------------------------------------------------------------------------
    def _write(self, changes: dict, codes_of) -> list:
        """Write decoded ``codes_of(name, idx, new)`` into the weights at the changed positions (``idx``:
        flat indices into the codes, mapped to each module's weight layout)."""
        written = []
        with torch.no_grad():
            for name, (idx, new) in changes.items():
                module = self.model.get_submodule(name)
                weight = module.weight
                pos = weight_positions(idx.to(weight.device), weight.shape, module)
                written.append((weight, pos, weight[pos].clone()))
                weight.index_put_(pos, codes_of(name, idx, new).to(weight.device, weight.dtype))
        return written

    @staticmethod
    def _restore(written: list) -> None:
        with torch.no_grad():
            for weight, pos, old in written:
                weight.index_put_(pos, old)

    @contextmanager
    def applied(self, candidate: Codes):
        """Context in which ``self.model`` decodes ``candidate`` (restored afterwards)."""
        written = self._write(changed_weights(self.state, self.reference, candidate),
                              lambda n, i, c: decode_at(self.state, n, i, c))
        try:
            yield self.model
        finally:
            self._restore(written)

    # -- evaluation -----------------------------------------------------------------------------
    def _forward_chunk(self, k: int, changed: frozenset):
        return self.model(self.chunks[k][0])

    def _run(self, changes: dict, bar: torch.Tensor | None, z: float = 2.0) -> Evaluation:
        changed = frozenset(changes)
        losses, metrics, seen = [], [], 0
        with torch.no_grad():
            for k, (_, target) in enumerate(self.chunks):
                out = self._forward_chunk(k, changed)
                losses.append(self.loss_fn(out, target).float())
                if self.metric_fn is not None:
                    metrics.append(self.metric_fn(out, target))
                seen += len(target)
                if bar is not None and seen >= self.reject_min_samples and seen < self.num_samples:
                    d = torch.cat(losses) - bar[:seen]
                    if d.mean() > z * d.std() / math.sqrt(seen):
                        lo = torch.cat(losses)
                        return Evaluation(lo.mean().item(), lo, complete=False, samples=seen)
        lo = torch.cat(losses)
        metric = torch.cat(metrics).mean().item() if metrics else None
        return Evaluation(lo.mean().item(), lo, complete=True, metric=metric, samples=seen)

    def evaluate(self, candidate: Codes, early_reject: bool = False, z: float = 2.0) -> Evaluation:
        """Fitness of ``candidate`` on the search split. With ``early_reject``, stop as soon as it is
        significantly worse (paired z-test at level ``z``) than the reference on the images seen so far."""
        self.evaluations += 1
        changes = changed_weights(self.state, self.reference, candidate)
        if not changes:
            return self.reference_eval
        written = self._write(changes, lambda n, i, c: decode_at(self.state, n, i, c))
        try:
            return self._run(changes, self.reference_eval.losses if early_reject else None, z)
        finally:
            self._restore(written)

    def set_reference(self, candidate: Codes, evaluation: Evaluation | None = None) -> None:
        """Make ``candidate`` the reference (the model now decodes it). ``evaluation`` must be complete."""
        changes = changed_weights(self.state, self.reference, candidate)
        self._write(changes, lambda n, i, c: decode_at(self.state, n, i, c))
        self.reference = candidate
        self._invalidate(frozenset(changes))
        if evaluation is None or not evaluation.complete:
            evaluation = self._run({}, None)
        self.reference_eval = evaluation

    def _invalidate(self, changed: frozenset) -> None:
        pass
