"""What every evaluator shares: candidates, per-sample losses, the :class:`Evaluation` record.

A *candidate* is a dict ``{layer name: int16 codes}`` (the codes of every quantized layer, in the rows
layout of :mod:`qevo_lite.quant.layout`; tensors shared with its parent where nothing changed). Flat
indices below index the codes, not a module's weight: a transposed conv's weight is laid out
differently (see :func:`qevo_lite.quant.layout.weight_positions`). Loss functions map
``(outputs, targets)`` of a chunk to per-sample losses ``(n,)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..quant.grid import QuantState

Codes = dict  # layer name -> int16 codes tensor (rows layout: output channel first)


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (nats), (n,)."""
    return F.cross_entropy(logits, y, reduction="none")


def reconstruction_mse(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared reconstruction error, (n,). ``target`` is the input image batch."""
    return (recon - target).pow(2).flatten(1).mean(1)


def accuracy_metric(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample correctness (1.0 or 0.0), (n,)."""
    return (logits.argmax(1) == y).float()


LOSSES = {"cross_entropy": (cross_entropy_loss, accuracy_metric), "mse": (reconstruction_mse, None)}


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
