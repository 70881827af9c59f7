"""One call for your own model: ``qv.quantize(model, data, bits=3, method="es")``.

Folds batch-norm, rounds every Linear/Conv/ConvTranspose weight to nearest (RTN, the scale rule of lowest
loss on ``data``), then chooses the codes with ``method`` on that grid: any method of the registry
(:mod:`qevo_lite.methods`), by name or as a config. The built-in ones:

* ``"rtn"``: nearest rounding only;
* ``"gptq"``: GPTQ (greedy, error feedback through each layer's input Hessian);
* ``"adaround"``: AdaRound (learned up/down choice per weight, 1,000 Adam steps per layer);
* ``"brecq"``: block reconstruction (AdaRound's relaxation fitted to each block's output, weighted by the
  Fisher diagonal; blocks found by :func:`qevo_lite.rounding.blocks.find_blocks`'s rule, layer by layer for a
  model torch.fx cannot trace);
* ``"es"``: the evolution strategy: the local stage (per-channel ES on each layer's exact quadratic
  output error); ``budget=N`` adds the paper's global (1+8) ES on the loss over ``data`` after it (off by
  default: it added no held-out gain, :mod:`qevo_lite.es.pipeline`).

``data`` is what the methods fit (never your test set): a :class:`~qevo_lite.core.data.Split` or an
``(inputs, targets)`` pair (the loss is then the cross-entropy unless you pass ``loss``), a tensor of inputs
alone (the loss is then the MSE to the float model's own outputs), or a torch ``Dataset`` / ``DataLoader`` of
either, streamed batch by batch (:mod:`qevo_lite.core.streaming` says what streams and what is held); it is
checked first (:mod:`qevo_lite.core.user_data`). Returns the quantized float model (weights decoded) and a
:class:`QuantizeReport`.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .core.data import Split
from .core.streaming import BATCH, StreamedSplit, in_memory, split_batches
from .core.user_data import as_inputs_and_targets, check_class_labels
from .evaluators.base import Loss, resolve_loss
from .methods import RoundingProblem, choose_codes, default_config, get_method
from .quant.export import float_size_bytes, save_state
from .quant.fold import fold_batchnorm, unquantized_weighted_modules
from .quant.onnx_export import export_float_onnx, export_onnx
from .quant.rtn import best_rtn


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
    onnx: object = None              # an OnnxExport when ``onnx=`` was given
    onnx_float_bytes: int = 0        # the same model as a float32 ONNX file

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
        if self.onnx is not None:
            lines.append(f"  ONNX {self.onnx.path} {self.onnx.bytes:,} bytes vs {self.onnx_float_bytes:,} as float32 "
                         f"ONNX ({self.onnx_float_bytes / max(1, self.onnx.bytes):.1f}x smaller; "
                         f"{len(self.onnx.integer_layers)} layers with integer weights)")
            if self.onnx.float_layers:
                lines.append(f"  left float32 in the ONNX file: {self.onnx.float_layers}")
        if self.left_in_float:
            lines.append(f"  left in float: {self.left_in_float}")
        return "\n".join(lines)


def _scores(model: nn.Module, split: Split, loss: Loss, metric_fn, batch: int = 256) -> dict:
    """``{"loss": mean per-sample loss (, "accuracy")}`` of ``model`` on ``split``, scored against the targets
    ``loss`` names (labels, or the inputs for a reconstruction)."""
    device = next(model.parameters()).device
    losses, metrics = [], []
    with torch.no_grad():
        for x, y in split_batches(split, batch, loss.against):
            out = model(x.to(device))
            y = y.to(device)
            losses.append(loss.fn(out, y).float().cpu())
            if metric_fn is not None:
                metrics.append(metric_fn(out, y).float().cpu())
            del x, y, out      # before the next batch is read
    res = {"loss": float(torch.cat(losses).mean())}
    if metrics:
        res["accuracy"] = float(torch.cat(metrics).mean())
    return res


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The float model's outputs on inputs ``x`` (CPU), in batches of 256."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(x[i:i + BATCH].to(device)).cpu() for i in range(0, len(x), BATCH)])


def _as_split(model: nn.Module, data, what: str = "data") -> tuple[Split | StreamedSplit, bool]:
    """``(split, labelled)`` of any form :mod:`qevo_lite.core.user_data` accepts, checked: tensors and pairs as a
    Split, a DataLoader or Dataset streamed (:class:`~qevo_lite.core.streaming.StreamedSplit`); inputs alone get
    the float model's outputs as targets."""
    if isinstance(data, (DataLoader, Dataset)):
        split = StreamedSplit(data, what, targets_of=lambda x: _outputs(model, x))
        return split, split.labelled
    x, y = as_inputs_and_targets(data, what)
    if y is not None:
        return Split(x, y), True
    return Split(x, _outputs(model, x)), False


def _check_labels(model: nn.Module, split: Split | StreamedSplit, what: str) -> None:
    """Labels a cross-entropy over the model's outputs can score (see :func:`check_class_labels`), batch by
    batch."""
    with torch.no_grad():
        out = model(in_memory(split, 1).x.to(next(model.parameters()).device))
    if out.ndim != 2:
        raise ValueError(f"The cross-entropy needs outputs of shape (N, classes); the model gives "
                         f"{tuple(out.shape)}. Pass loss='output_mse' or a callable loss.")
    for _, y in split_batches(split):
        check_class_labels(y, out.shape[1], what)


def _check_counts(samples: int, budget: int, adaround_steps: int) -> None:
    for name, value, least in (("samples", samples, 1), ("budget", budget, 0), ("adaround_steps", adaround_steps, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")


def quantize(model: nn.Module, data, bits: int = 4, method="es", *, test=None, loss=None,
             granularity: str = "per_channel", seed: int = 0, budget: int = 0, samples: int = 256,
             adaround_steps: int = 1000, progress: bool = True, onnx=None) -> tuple[nn.Module, QuantizeReport]:
    """Quantize ``model``'s weights to ``bits`` bits with ``method`` (see the module docstring).

    Args:
        model: any PyTorch model (not modified); BN is folded into the convs first.
        data: what the methods fit: a Split / (inputs, targets) pair, a tensor of inputs alone, or a torch
            ``Dataset`` / ``DataLoader`` of either (streamed, :mod:`qevo_lite.core.streaming`: read again on every
            pass, in a fixed order, one batch at a time where a method sums over images). Checked first: no
            samples, NaN/inf inputs, a target count that differs from the input count and, for the
            cross-entropy, labels that are not class indices of the model's outputs raise a ValueError that
            says what to pass instead.
        method: a registered method's name (:func:`qevo_lite.methods.method_names`) or a config instance
            (e.g. ``qv.methods.AdaRoundConfig(steps=2000)``); a name takes its config from ``samples``,
            ``budget`` and ``adaround_steps``.
        test: optional held-out data in any of ``data``'s forms, for the report; never used to choose.
        loss: ``"cross_entropy"``, ``"mse"`` (reconstruction of the inputs, for autoencoders), ``"output_mse"``
            or a callable ``(outputs, targets) -> (n,)`` (:data:`qevo_lite.evaluators.base.LOSSES` says what each
            scores against; the ES and the report use the same); default cross-entropy for labelled data,
            ``"output_mse"`` to the float model's outputs for inputs alone.
        samples: images whose layer inputs the layer-wise methods fit (AdaRound: 4x as many).
        budget: the global ES stage's evaluations (0, the default: the local stage alone; the paper's chain ran 64,
            :data:`qevo_lite.methods.PAPER_GLOBAL`); adaround_steps: AdaRound's Adam steps per layer.
        onnx: a path: also write the quantized model there as ONNX with integer weights
            (:func:`qevo_lite.quant.onnx_export.export_onnx`; needs the ``export`` extra); the report gives its
            size next to the float32 ONNX file's.
    Returns ``(quantized model, report)``."""
    _check_counts(samples, budget, adaround_steps)
    config = default_config(method, samples, budget, adaround_steps) if isinstance(method, str) else method
    name = get_method(config).name   # ValueError naming the registered methods for an unknown one
    fmodel = fold_batchnorm(model)   # a copy: the user's model is never modified
    split, labelled = _as_split(fmodel, data)
    test = None if test is None else _as_split(fmodel, test, "test")[0]
    loss = loss or ("cross_entropy" if labelled else "output_mse")
    spec = resolve_loss(loss)
    if loss == "cross_entropy":
        for what, s in (("data", split), ("test", test)):
            if s is not None:
                _check_labels(fmodel, s, what)
    metric_fn = spec.metric if loss == "cross_entropy" else None
    score = lambda m, s: _scores(m, s, spec, None)["loss"]  # noqa: E731
    floats = list(unquantized_weighted_modules(fmodel))
    t0 = time.perf_counter()
    rtn = best_rtn(fmodel, split, bits, granularity, score=score)
    problem = RoundingProblem(fmodel, rtn.state, split, seed=seed, loss=loss,
                              metric="default" if isinstance(loss, str) else None, progress=progress)
    state = choose_codes(config, problem).state
    seconds = time.perf_counter() - t0
    qmodel = state.to_model(fmodel)
    with tempfile.TemporaryDirectory() as tmp:
        packed = save_state(state, Path(tmp) / "state.qevo", fmodel)
    report = QuantizeReport(name, bits, rtn.config.scale_rule, seconds, state.num_weights,
                            sum(rtn.state.moved(state).values()), packed, float_size_bytes(state),
                            _scores(qmodel, split, spec, metric_fn),
                            _scores(rtn.state.to_model(fmodel), split, spec, metric_fn), left_in_float=floats)
    if test is not None:
        report.test = _scores(qmodel, test, spec, metric_fn)
        report.rtn_test = _scores(rtn.state.to_model(fmodel), test, spec, metric_fn)
    if onnx is not None:
        example = in_memory(split, 2).x.to(next(fmodel.parameters()).device)
        report.onnx = export_onnx(fmodel, state, example, onnx)
        with tempfile.TemporaryDirectory() as tmp:
            report.onnx_float_bytes = export_float_onnx(fmodel, example, Path(tmp) / "float.onnx")
    return qmodel.eval(), report
