"""What every evaluator shares: candidates, per-sample losses, the :class:`Evaluation` record.

A *candidate* is a dict ``{layer name: int16 codes}`` (the codes of every quantized layer, in the rows
layout of :mod:`qevo_lite.quant.layout`; tensors shared with its parent where nothing changed). Flat
indices below index the codes, not a module's weight: a transposed conv's weight is laid out
differently (see :func:`qevo_lite.quant.layout.weight_positions`). Loss functions map
``(outputs, targets)`` of a chunk to per-sample losses ``(n,)``.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch
from torch import nn
import torch.nn.functional as F

from ..quant.grid import QuantState

Codes = dict  # layer name -> int16 codes tensor (rows layout: output channel first)


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (nats), (n,)."""
    return F.cross_entropy(logits, y, reduction="none")


def mean_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared difference, (n,)."""
    return (outputs - targets).pow(2).flatten(1).mean(1)


def reconstruction_mse(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared reconstruction error, (n,). ``target`` is the input image batch."""
    return mean_squared_error(recon, target)


def output_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared difference to given targets, (n,): for inputs alone, the float model's outputs."""
    return mean_squared_error(outputs, targets)


def accuracy_metric(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample correctness (1.0 or 0.0), (n,)."""
    return (logits.argmax(1) == y).float()


@dataclass(frozen=True)
class Loss:
    """A per-sample loss ``fn(outputs, targets) -> (n,)``, its default metric (or None), and what it scores the
    outputs against: ``"labels"`` (a split's ``y``) or ``"inputs"`` (its ``x``: a reconstruction)."""

    fn: Callable
    metric: Callable | None = None
    against: str = "labels"

    def targets(self, split) -> torch.Tensor:
        """The tensor of ``split`` this loss compares the outputs with."""
        return split.x if self.against == "inputs" else split.y


# the named losses: the one place that says which targets each scores
LOSSES = {"cross_entropy": Loss(cross_entropy_loss, accuracy_metric),
          "mse": Loss(reconstruction_mse, None, "inputs"),
          "output_mse": Loss(output_mse, None, "labels")}


def resolve_loss(loss) -> Loss:
    """The :class:`Loss` of a name in :data:`LOSSES` or of a callable (one of the named functions keeps its
    targets; any other callable scores against the labels). ValueError names the known losses."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"Unknown loss {loss!r}; choose one of {sorted(LOSSES)} or pass a callable.")
        return LOSSES[loss]
    for spec in LOSSES.values():
        if spec.fn is loss:
            return Loss(loss, None, spec.against)
    return Loss(loss)


@dataclass
class Evaluation:
    """The result of evaluating one candidate.

    ``fitness``: mean per-sample loss over the samples evaluated (lower is better);
    ``losses``: per-sample losses (n_evaluated,); ``complete``: False when early rejection
    stopped it (then it lost against the reference); ``metric``: mean of the metric
    (e.g. accuracy) when complete and a metric is defined.
    """

    fitness: float
    losses: torch.Tensor | None = None
    complete: bool = True
    metric: float | None = None
    samples: int = 0


def changed_weights(state: QuantState, reference: Codes, candidate: Codes) -> dict:
    """``{layer: (flat indices into the codes, new codes)}`` where ``candidate`` differs from ``reference``."""
    out = {}
    for name, codes in candidate.items():
        ref = reference[name]
        if codes is ref:
            continue
        idx = (codes != ref).reshape(-1).nonzero().squeeze(1)
        if len(idx):
            out[name] = (idx, codes.reshape(-1)[idx])
    return out


def decode_at(state: QuantState, name: str, idx: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Float weight values of ``codes`` at flat positions ``idx`` of layer ``name``'s codes (rows layout)."""
    lq = state.layers[name]
    per_row = lq.codes[0].numel()
    row = idx // per_row if lq.scale.numel() > 1 else torch.zeros_like(idx)
    return lq.scale[row] * (codes.float() - lq.zero_point[row].float())


@runtime_checkable
class Evaluator(Protocol):
    """What the ES engine (:func:`qevo_lite.es.engine.run_es`) needs of a fitness: the full network
    (:class:`~qevo_lite.evaluators.full.FullEvaluator`), the incremental one
    (:class:`~qevo_lite.evaluators.incremental.IncrementalEvaluator`) and one layer's output error
    (:class:`~qevo_lite.evaluators.layerwise.LayerwiseEvaluator`) all provide it.

    ``state``: the grid and scales; ``reference``: the codes candidates are compared with (the current parent)
    and ``reference_eval`` their :class:`Evaluation`; ``evaluations``: how many candidates it evaluated."""

    state: QuantState
    reference: Codes
    reference_eval: Evaluation
    evaluations: int

    def evaluate(self, candidate: Codes, early_reject: bool = False, z: float = 2.0) -> Evaluation:
        """The candidate's :class:`Evaluation`; with ``early_reject`` it may stop once the candidate is ``z``
        standard errors worse than the reference (then ``complete`` is False)."""

    def set_reference(self, candidate: Codes, evaluation: Evaluation | None = None) -> None:
        """Make ``candidate`` the reference (its evaluation, when known, saves a pass)."""

    def applied(self, candidate: Codes) -> AbstractContextManager[nn.Module]:
        """A context in which the evaluator's model carries ``candidate``'s decoded weights."""
