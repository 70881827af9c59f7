"""The two stages of the ES as the experiments run it, on any model and any per-sample loss.

* *local*: layer by layer, in graph order, each layer on its output MSE against the FP32 layer
  (:func:`run_layerwise`, :class:`~qevo_lite.evaluators.layerwise.LayerwiseEvaluator`);
* *global*: a (1+lambda) ES on the whole network's per-sample loss over the search split
  (:class:`~qevo_lite.evaluators.incremental.IncrementalEvaluator`).

Both save their progress to a checkpoint file when given one, so an interrupted run resumes.
"""
from __future__ import annotations

import copy
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.data import Split
from ..core.io import save_torch
from ..core.streaming import first_inputs, in_memory
from ..evaluators.base import Codes, resolve_loss
from ..evaluators.incremental import IncrementalEvaluator
from ..evaluators.layerwise import LayerwiseEvaluator
from ..evaluators.output_weights import output_weights
from ..evaluators.quadratic import LayerQuadratic, NotQuadratic
from ..quant.grid import QuantState
from ..rounding.layers import layer_by_layer
from .engine import ESConfig, ESResult, run_es
from .channel_es import evolve_layer


# the quadratic local fitness: the plain output error, or weighted by the Fisher diagonal per output position or
# per output element (see quadratic_stage)
WEIGHTINGS = ("output", "fisher", "fisher_channels")
PER_CHANNEL_ENTRIES = 1 << 21       # "fisher_channels" keeps one H per output channel up to C_out K^2 (16 MB)


class LocalStageResult(NamedTuple):
    """What a local stage returns: the codes after it ``{layer: int16 tensor}``, one log entry per layer it
    evolved (``{layer, before, after, evaluations, ...}``) and its wall time in seconds (resumed runs add up)."""

    codes: Codes
    log: list
    seconds: float


class GlobalStageResult(NamedTuple):
    """What the global stage returns: the ES run (:class:`~qevo_lite.es.engine.ESResult`), the evaluation of
    its start codes (:class:`~qevo_lite.evaluators.base.Evaluation`) and the seconds spent building the
    evaluator before the run (part of the stage's wall time)."""

    result: ESResult
    start: object
    setup_seconds: float

    @property
    def ran(self) -> bool:
        """False for a budget of 0 (no stage: the start codes came back, nothing was evaluated)."""
        return self.start is not None


@contextmanager
def torch_threads(n: int | None):
    """Temporarily use ``n`` torch CPU threads (None: unchanged)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_layerwise(fmodel: nn.Module, state: QuantState, search: Split, config, samples: int = 512,
                  layers=None, progress: bool = True, start: Codes | None = None):
    """Run the ES layer by layer, in graph order, on the local fitness.

    Each layer's inputs are captured from the quantized model *with the layers before it already
    evolved*, so later layers can compensate earlier errors. ``config`` is an
    :class:`~qevo_lite.es.ESConfig` whose budget applies to each layer.
    Returns ``(codes, per-layer list of {layer, before, after, evaluations, seconds})``.
    """
    log = []

    def evolve(name, module, io, codes):
        inputs, targets = io.whole()
        ev = LayerwiseEvaluator(module, name, state, inputs, targets, reference=codes)
        before = ev.reference_eval.fitness
        res = run_es(ev, config, layers=[name], progress=progress)
        log.append({"layer": name, "before": before, "after": res.best_eval.fitness,
                    "evaluations": res.evaluations, "seconds": res.seconds})
        return res.best[name]

    codes = layer_by_layer(fmodel, state, first_inputs(search, samples), evolve, layers, start)
    return codes, log


def resumable_layers(rtn_state: QuantState, start: Codes | None, checkpoint: Path | None, threads: int | None,
                     evolve_one: Callable[[int, str, Codes, list], Codes], progress: bool = False) -> LocalStageResult:
    """The loop both local stages share: layers in graph order, each evolved by ``evolve_one(index, name,
    codes, log) -> codes`` (which appends its log entries), with ``threads`` torch threads. After each layer the
    codes, log and seconds are saved to ``checkpoint`` (when given), and a run whose checkpoint exists resumes
    after the last saved layer. ``progress``: a bar over the layers."""
    codes, log, seconds, done = dict(start if start is not None else rtn_state.codes()), [], 0.0, 0
    if checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, weights_only=False)
        codes, log, seconds, done = ck["codes"], ck["log"], ck["seconds"], ck["done"]
    names = list(rtn_state.layers)
    for i in tqdm(range(done, len(names)), desc="local stage", unit="layer", leave=False, disable=not progress):
        t0 = time.perf_counter()
        with torch_threads(threads):
            codes = evolve_one(i, names[i], codes, log)
        seconds += time.perf_counter() - t0
        if checkpoint is not None:
            save_torch({"codes": codes, "log": log, "seconds": seconds, "done": i + 1}, checkpoint)
    return LocalStageResult(codes, log, seconds)


def local_stage(fmodel, rtn_state, search: Split, *, evaluations: int, lam: int, p: float, local_moves: int | None,
                samples: int, seed: int, checkpoint: Path | None = None, threads: int | None = 1,
                start: Codes | None = None, progress: bool = False) -> LocalStageResult:
    """Layer-wise (local) ES, one layer at a time in graph order, each on its layer-output MSE against the
    FP32 layer (:func:`run_layerwise`). Works for any task: it only needs the float
    model, the RTN state and the search images (a Split or a streamed one).

    ``evaluations`` per layer; a mutation moves ``local_moves`` weights of the layer on average (rate
    ``local_moves / layer size``; None: rate ``p``), adapted by the 1/5 rule; from ``start`` codes (default
    RTN's). ``checkpoint``: a file the
    codes are saved to after each layer, so an interrupted run resumes between layers. ``threads``: CPU
    threads during the stage (many tiny operations). Raises KeyboardInterrupt when a layer was interrupted
    (after saving the layers before it). ``progress``: a bar over the layers.
    """
    def evolve_one(i, name, codes, log):
        n = rtn_state.layers[name].codes.numel()
        rate = p if local_moves is None else min(1.0, local_moves / n)
        cfg = ESConfig(max_evaluations=evaluations, lam=lam, p=rate, seed=seed * 1009 + i)
        codes, layer_log = run_layerwise(fmodel, rtn_state, search, cfg, samples=samples, layers=[name],
                                         progress=False, start=codes)
        if layer_log[0]["evaluations"] < evaluations:  # run_es caught a Ctrl-C: stop here
            raise KeyboardInterrupt
        log += layer_log
        return codes

    return resumable_layers(rtn_state, start, checkpoint, threads, evolve_one, progress)


def quadratic_stage(fmodel, rtn_state, search: Split, start: Codes | None = None, *, samples: int = 1024,
                    generations: int = 2000, lam: int = 16, topk: int = 32, patience: int = 100, seed: int = 0,
                    checkpoint: Path | None = None, threads: int | None = 1, weighting: str = "output",
                    loss="cross_entropy", progress: bool = False) -> LocalStageResult:
    """The local stage on the exact quadratic fitness (:mod:`qevo_lite.es.channel_es`): layer by layer in graph
    order, each layer's inputs from the model whose earlier layers are already evolved, targets from the FP32
    model, on ``samples`` search images; from ``start`` codes (default: RTN's; e.g. a peer's codes).

    ``weighting`` (:data:`WEIGHTINGS`): ``"output"``, every output element alike; ``"fisher"``, each output
    position weighted by the squared gradient of the task ``loss`` there, averaged over channels (the rank-one
    factorisation of :mod:`~qevo_lite.evaluators.output_weights`: same memory and work as ``"output"``);
    ``"fisher_channels"``, each output element by its own squared gradient (one quadratic form per output
    channel) in layers whose C_out K^2 is at most :data:`PER_CHANNEL_ENTRIES`, per position in larger ones. The
    weights are computed once on the same images; their time is part of the stage's.

    A layer the quadratic form cannot describe (:class:`~qevo_lite.evaluators.quadratic.NotQuadratic`) keeps
    its codes, with one warning naming it (the global stage still moves it). ``checkpoint``: the codes are
    saved after each layer, so an interrupted run resumes between layers. ``search``: a Split or a
    :class:`~qevo_lite.core.streaming.StreamedSplit`; either way each layer's quadratic form is summed one batch of
    images at a time (the Fisher weights are held for the ``samples`` images). ``progress``: a bar over the
    layers."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Unknown weighting {weighting!r}; choose one of {WEIGHTINGS}.")
    skipped, t0, weights = [], time.perf_counter(), {}
    if weighting != "output":
        spec = resolve_loss(loss)
        exact = [n for n, lq in rtn_state.layers.items() if weighting == "fisher_channels"
                 and lq.codes.shape[0] * lq.codes[0].numel() ** 2 <= PER_CHANNEL_ENTRIES]
        fitted = in_memory(search, samples)   # the weights are per image: held for the samples images
        weights = output_weights(fmodel, list(rtn_state.layers), fitted.x, spec.targets(fitted), spec.fn,
                                 per_element=exact)
    weight_seconds = time.perf_counter() - t0

    def evolve_one(i, name, codes, log):
        def evolve(name, module, io, current):
            try:
                q = LayerQuadratic.streamed(module, rtn_state.layers[name], io.batches(), current[name],
                                            weights=weights.get(name))
            except NotQuadratic:
                skipped.append(name)
                return current[name]
            entry = evolve_layer(q, generations, lam, topk, patience, seed=seed * 1009 + i)
            log.append({"layer": name, **entry})
            return q.codes_like_layer()
        return layer_by_layer(fmodel, rtn_state, first_inputs(search, samples), evolve, [name], codes)

    out = resumable_layers(rtn_state, start, checkpoint, threads, evolve_one, progress)
    out = out._replace(seconds=out.seconds + weight_seconds)
    if skipped:
        warnings.warn(f"The quadratic local fitness does not describe {skipped}: their codes were left as they "
                      "were for the global stage.", stacklevel=2)
    return out


def global_stage(fmodel, rtn_state, search: Split, start_codes, *, budget: int, lam: int, p: float, seed: int,
                 loss="cross_entropy", metric="default", report=None, report_every: int = 1,
                 checkpoint: Path | None = None, progress: bool = False, early_reject: bool = True,
                 chunk_size: int | None = None) -> GlobalStageResult:
    """The global (1+lambda) ES on the whole network's per-sample ``loss`` over ``search``, started from
    ``start_codes`` (e.g. the local stage's result), with the fast :class:`IncrementalEvaluator`.

    ``loss``/``metric``: as for :class:`~qevo_lite.evaluators.full.FullEvaluator` (``"cross_entropy"``, ``"mse"``
    or callables on ``(outputs, targets)``). ``report``: ``model -> dict`` of held-out numbers, called
    at the start, every ``report_every`` generations and at the end (never used for selection).
    ``checkpoint``: ES checkpoint file (resumes when it exists). Raises KeyboardInterrupt when the run was interrupted (its checkpoint is saved).
    ``chunk_size``: images per forward pass (default: the evaluator's); early rejection decides after
    whole chunks, so a search split of a few hundred images needs smaller chunks for it to act. ``budget`` 0:
    no stage (the start codes come back, with no evaluation: ``start`` and ``best_eval`` are None).
    """
    if budget == 0:     # no global stage: the start codes, nothing evaluated (the search split is not read)
        return GlobalStageResult(ESResult(best=dict(start_codes), best_eval=None), None, 0.0)
    t0 = time.perf_counter()
    evaluator = IncrementalEvaluator(copy.deepcopy(fmodel), rtn_state, search, loss=loss, metric=metric,
                                     chunk_size=chunk_size)
    evaluator.set_reference(start_codes)
    start_eval = evaluator.reference_eval
    cfg = ESConfig(mu=1, lam=lam, p=p, max_evaluations=budget, early_reject=early_reject,
                   report_every=report_every, seed=seed)
    setup_seconds = time.perf_counter() - t0
    result = run_es(evaluator, cfg, report=report, checkpoint=checkpoint, checkpoint_every=5, progress=progress)
    if result.interrupted:
        raise KeyboardInterrupt
    return GlobalStageResult(result, start_eval, setup_seconds)
