"""One call for your own model: ``qv.quantize(model, data, bits=3, method="es")``.

Folds batch-norm, rounds every Linear/Conv/ConvTranspose weight to nearest (RTN, the scale rule of lowest
loss on ``data``), then chooses the codes with ``method`` on that grid:

* ``"rtn"``: nearest rounding only;
* ``"gptq"``: GPTQ (greedy, error feedback through each layer's input Hessian);
* ``"adaround"``: AdaRound (learned up/down choice per weight, 1,000 Adam steps per layer);
* ``"es"``: the evolution strategy: the local stage (per-channel ES on each layer's exact quadratic
  output error) then the global (1+8) ES on the loss over ``data``.

``data`` is what the methods fit (never your test set): a :class:`~qevo_lite.core.data.Split` with labels
(the loss is then the cross-entropy unless you pass ``loss``), or a tensor of inputs alone (the loss is then
the MSE to the float model's own outputs). Returns the quantized float model (weights decoded) and a
:class:`QuantizeReport`.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .core.data import Split
from .es.stages import global_stage, quadratic_stage
from .evaluators.base import LOSSES
from .quant.export import float_size_bytes, save_state
from .quant.fold import fold_batchnorm, unquantized_weighted_modules
from .quant.rtn import best_rtn
from .rounding.adaround import adaround
from .rounding.gptq import gptq

METHODS = ("rtn", "gptq", "adaround", "es")


def output_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared difference to the float model's outputs, (n,) (the loss for inputs alone)."""
    return (outputs - targets).pow(2).flatten(1).mean(1)


@dataclass
class QuantizeReport:
    """What :func:`quantize` did. Losses are means per sample of ``loss`` (on ``data`` and, if given, on
    ``test``); ``accuracy`` entries only for labelled classification data; sizes in bytes."""

    method: str
    bits: int
    scale_rule: str
    seconds: float
    weights: int
    moved: int
    packed_bytes: int
    float_bytes: int
    search: dict = field(default_factory=dict)
    rtn_search: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    rtn_test: dict = field(default_factory=dict)
    left_in_float: list = field(default_factory=list)

    def __str__(self) -> str:
        fmt = lambda d: ", ".join(f"{k} {v:.4g}" for k, v in d.items()) or "-"  # noqa: E731
        lines = [f"{self.method} at W{self.bits} ({self.scale_rule} scales) in {self.seconds:.1f} s",
                 f"  search: {fmt(self.search)} (RTN: {fmt(self.rtn_search)})"]
        if self.test:
            lines.append(f"  held-out: {fmt(self.test)} (RTN: {fmt(self.rtn_test)})")
        lines.append(f"  weights moved from nearest rounding: {self.moved} of {self.weights} "
                     f"({100 * self.moved / max(1, self.weights):.2f}%)")
        lines.append(f"  packed size {self.packed_bytes:,} bytes vs {self.float_bytes:,} as float32 "
                     f"({self.float_bytes / max(1, self.packed_bytes):.1f}x smaller)")
        if self.left_in_float:
            lines.append(f"  left in float: {self.left_in_float}")
        return "\n".join(lines)


def _numbers(model: nn.Module, split: Split, loss_fn, metric_fn, batch: int = 256) -> dict:
    device = next(model.parameters()).device
    losses, metrics = [], []
    with torch.no_grad():
        for i in range(0, len(split), batch):
            out = model(split.x[i:i + batch].to(device))
            y = split.y[i:i + batch].to(device)
            losses.append(loss_fn(out, y).float().cpu())
            if metric_fn is not None:
                metrics.append(metric_fn(out, y).float().cpu())
    res = {"loss": float(torch.cat(losses).mean())}
    if metrics:
        res["accuracy"] = float(torch.cat(metrics).mean())
    return res


def _as_split(model: nn.Module, data) -> tuple[Split, bool]:
    """``(split, labelled)``: inputs alone get the float model's outputs as targets."""
    if isinstance(data, Split):
        return data, True
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return Split(data[0], data[1]), True
    if isinstance(data, torch.Tensor):
        device = next(model.parameters()).device
        with torch.no_grad():
            y = torch.cat([model(data[i:i + 256].to(device)).cpu() for i in range(0, len(data), 256)])
        return Split(data, y), False
    raise TypeError("data must be a Split, an (inputs, targets) pair or a tensor of inputs.")


def quantize(model: nn.Module, data, bits: int = 4, method: str = "es", *, test=None, loss=None,
             granularity: str = "per_channel", seed: int = 0, budget: int = 64, samples: int = 256,
             adaround_steps: int = 1000, progress: bool = True) -> tuple[nn.Module, QuantizeReport]:
    """Quantize ``model``'s weights to ``bits`` bits with ``method`` (see the module docstring).

    Args:
        model: any PyTorch model (not modified); BN is folded into the convs first.
        data: what the methods fit: a Split / (inputs, targets) pair, or a tensor of inputs alone.
        test: optional held-out Split / pair (labelled data) for the report; never used to choose.
        loss: ``"cross_entropy"``, ``"mse"`` (reconstruction of the inputs, for autoencoders) or a callable
            ``(outputs, targets) -> (n,)``; default cross-entropy for labelled data, :func:`output_mse` to the
            float model's outputs for inputs alone.
        samples: images whose layer inputs the layer-wise methods fit (AdaRound: 4x as many).
        budget: the global ES stage's evaluations; adaround_steps: AdaRound's Adam steps per layer.
    Returns ``(quantized model, report)``."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}.")
    fmodel = fold_batchnorm(model)
    split, labelled = _as_split(fmodel, data)
    loss = loss or ("cross_entropy" if labelled else output_mse)
    loss_fn, metric_fn = LOSSES[loss] if isinstance(loss, str) else (loss, None)
    if loss != "cross_entropy":
        metric_fn = None
    score = lambda m, s: _numbers(m, s, loss_fn, None)["loss"]  # noqa: E731
    floats = list(unquantized_weighted_modules(fmodel))
    t0 = time.perf_counter()
    rtn = best_rtn(fmodel, split, bits, granularity, score=score)
    state = rtn.state
    if method == "gptq":
        state = gptq(fmodel, state, split, samples=samples)
    elif method == "adaround":
        state = adaround(fmodel, state, split, samples=4 * samples, steps=adaround_steps, seed=seed)
    elif method == "es":
        codes, _, _ = quadratic_stage(fmodel, state, split, samples=samples, seed=seed)
        result, _, _ = global_stage(fmodel, state, split, codes, budget=budget, lam=8, p=0.002, seed=seed,
                                    loss=loss, metric="default" if isinstance(loss, str) else None,
                                    progress=progress)
        state = result.state(rtn.state)
    seconds = time.perf_counter() - t0
    qmodel = state.to_model(fmodel)
    with tempfile.TemporaryDirectory() as tmp:
        packed = save_state(state, Path(tmp) / "state.qevo", fmodel)
    report = QuantizeReport(method, bits, rtn.config.scale_rule, seconds, state.num_weights,
                            sum(rtn.state.moved(state).values()), packed, float_size_bytes(state),
                            _numbers(qmodel, split, loss_fn, metric_fn),
                            _numbers(rtn.state.to_model(fmodel), split, loss_fn, metric_fn), left_in_float=floats)
    if test is not None:
        test, _ = _as_split(fmodel, test)
        report.test = _numbers(qmodel, test, loss_fn, metric_fn)
        report.rtn_test = _numbers(rtn.state.to_model(fmodel), test, loss_fn, metric_fn)
    return qmodel.eval(), report
