"""The ES as one method: its settings as frozen configs, and its stages chained in one place.

:func:`evolve` runs the local stage (quadratic, :func:`~qevo_lite.es.stages.quadratic_stage`, or sampled,
:func:`~qevo_lite.es.stages.local_stage`; or none), then the gradient stage
(:func:`~qevo_lite.es.gradient_stage.gradient_stage`) and then the global (1+lambda) ES
(:func:`~qevo_lite.es.stages.global_stage`) from any start codes (RTN's, or a peer's); a stage with no budget is
skipped. ``qv.quantize``, the experiment cells, notebook 07 and the scripts all call it, so the chain and its
defaults are written once.

The default ES is the **local stage alone** (both second stages at budget 0): the global stage, the paper's own
(1+lambda) ES on the network's loss, added no held-out gain beyond the seed std on top of the local stage in any
classification or detection cell, and about 1% of the MSE on the autoencoder (``scripts/global_stage_study.py``,
README "Does the second (global) stage earn its time?"). :data:`PAPER_GLOBAL` is the stage as the profiles ran it
before; notebook 02 teaches it, and ``qevo reproduce --budget N`` / ``qv.quantize(..., budget=N)`` turn it back
on. The gradient stage is on in the autoencoder's profiles, where it lowered the held-out MSE beyond the seed std
at every width; on a classifier and a detector it did not (README, "A second stage that earns its time").
With ``gate_local`` (on in the autoencoder's profiles) the local stage's codes are kept only where they lower the
task's loss on the search split (:func:`gate`); from block reconstruction's codes they did not.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from ..core.data import Split
from ..core.streaming import in_memory
from ..evaluators.base import Codes
from ..quant.grid import QuantState
from ..rounding.problem import RoundingProblem
from .gradient_stage import GradientStageResult, gradient_stage, task_loss
from .stages import GlobalStageResult, LocalStageResult, global_stage, local_stage, quadratic_stage


@dataclass(frozen=True)
class QuadraticLocal:
    """The default local stage: per output channel, a (1+``lam``) ES on each layer's exact quadratic output
    error over ``samples`` search images, up to ``generations`` per layer (0: no local stage), first moves drawn
    from the ``topk`` of best predicted gain, a layer stops after ``patience`` generations without gain.
    ``weighting``: ``"output"`` (the layer's output error, every element alike), ``"fisher"`` (each output
    position weighted by the squared gradient of the task loss there, :mod:`qevo_lite.evaluators.output_weights`)
    or ``"fisher_channels"`` (each output element, where the layer is small enough:
    :func:`~qevo_lite.es.stages.quadratic_stage`)."""

    samples: int = 512
    generations: int = 2000
    lam: int = 16
    topk: int = 32
    patience: int = 100
    weighting: str = "output"

    @property
    def active(self) -> bool:
        return self.generations > 0


@dataclass(frozen=True)
class SampledLocal:
    """The first (sampled) local stage: ``evaluations`` per layer (0: none) of the general ES on the layer-output
    MSE over ``samples`` search images, (1+``lam``), a mutation moving ``moves`` weights of the layer on average
    (None: the share ``p`` of them)."""

    samples: int = 512
    evaluations: int = 200
    lam: int = 8
    p: float = 0.002
    moves: int | None = 4

    @property
    def active(self) -> bool:
        return self.evaluations > 0


@dataclass(frozen=True)
class GlobalStage:
    """The global (1+``lam``) ES on the task's per-sample loss over the search split: ``budget`` evaluations
    (0, the default: no global stage), a share ``p`` of a layer's weights moved at first (then the 1/5 rule),
    early rejection of hopeless candidates, ``chunk_size`` images per forward pass (None: the evaluator's)."""

    budget: int = 0
    lam: int = 8
    p: float = 0.002
    early_reject: bool = True
    chunk_size: int | None = None

    @property
    def active(self) -> bool:
        return self.budget > 0


@dataclass(frozen=True)
class GradientStage:
    """The second stage of moves proposed by the task loss's gradient and checked exactly
    (:mod:`~qevo_lite.es.gradient_stage`): at most ``budget`` checks (0, the default: no stage), ``draws``
    random directions for the curvature, the first ``first_share`` of all weights moved at once, the last
    ``holdout`` share of the search split kept for early stopping after ``patience`` kept steps without gain."""

    budget: int = 0
    draws: int = 32
    first_share: float = 0.002
    holdout: float = 0.25
    patience: int = 40

    @property
    def active(self) -> bool:
        return self.budget > 0


PAPER_GLOBAL = GlobalStage(budget=64)
"""The global stage as the classification profile ran it until 2026-12-06 (64 evaluations of the search
cross-entropy after the local stage); the detection and autoencoder profiles ran 24 and 96."""


@dataclass(frozen=True)
class EvolutionConfig:
    """The ES's settings: a local stage (``None``: none), then the gradient stage and the global stage (default:
    neither, budget 0). ``gate_local``: keep the local stage's codes only where they lower the task's loss on the
    search split, else go on from the start codes (from a peer that fits whole blocks, block reconstruction, the
    layer-wise local stage can undo the errors it traded between layers: README, "The ES after block
    reconstruction"); off by default, on in the autoencoder's profiles."""

    local: QuadraticLocal | SampledLocal | None = field(default_factory=QuadraticLocal)
    global_stage: GlobalStage = field(default_factory=GlobalStage)
    gradient_stage: GradientStage = field(default_factory=GradientStage)
    gate_local: bool = False

    @classmethod
    def for_quantize(cls, samples: int, budget: int, adaround_steps: int) -> "EvolutionConfig":
        """The config ``qv.quantize``'s size arguments ask for: the quadratic local stage on ``samples`` images,
        the global stage with ``budget`` evaluations (0: none)."""
        return cls(local=QuadraticLocal(samples=samples), global_stage=GlobalStage(budget=budget))

    def describe(self, samples: str) -> str:
        local = {"quadratic": "quadratic local stage, then ", "sampled": "sampled local stage, then ",
                 None: ""}[self.local_kind]
        if self.local_kind == "quadratic" and self.local.weighting != "output":
            local = "Fisher-weighted " + local
        g, d = self.global_stage, self.gradient_stage
        if d.active:
            local += f"gradient-proposed moves ({d.budget} checks){', then ' if g.active else ''}"
        if not g.active:
            if d.active:
                return f"ES ({local})"
            return f"ES ({local.removesuffix(', then ') or 'no stage: the start codes'}{' only' * bool(local)})"
        return f"ES ({local}a global (1+{g.lam}) ES, {g.budget} evaluations)"

    def with_budgets(self, budget: int | None = None, local_budget: int | None = None) -> "EvolutionConfig":
        """A copy with the global stage's ``budget`` (evaluations) and the local stage's budget (generations per
        layer of the quadratic stage, evaluations per layer of the sampled one) replaced where not None."""
        out = self
        if budget is not None:
            out = replace(out, global_stage=replace(out.global_stage, budget=budget))
        if local_budget is not None and out.local is not None:
            key = "generations" if isinstance(out.local, QuadraticLocal) else "evaluations"
            out = replace(out, local=replace(out.local, **{key: local_budget}))
        return out

    def budgets_text(self) -> str:
        """``"<n> local evaluations per layer + <budget> global evaluations"`` (for the quadratic local stage:
        ``"<n> local generations per layer + ..."``; without a global stage only the local part)."""
        if self.local_kind == "quadratic":
            per_layer = f"{self.local.generations} local generations per layer"
        else:
            per_layer = f"{self.local.evaluations if self.local is not None else 0} local evaluations per layer"
        if self.gradient_stage.active:
            per_layer += f" + {self.gradient_stage.budget} gradient-stage checks"
        if not self.global_stage.active:
            return per_layer
        return f"{per_layer} + {self.global_stage.budget} global evaluations"

    def as_dict(self) -> dict:
        """JSON-ready: ``{"local": {"kind": "quadratic" | "sampled", **settings} or None, "global_stage": {...},
        "gradient_stage": {...}}``."""
        local = None if self.local is None else {
            "kind": "quadratic" if isinstance(self.local, QuadraticLocal) else "sampled", **asdict(self.local)}
        return {"local": local, "global_stage": asdict(self.global_stage),
                "gradient_stage": asdict(self.gradient_stage), "gate_local": self.gate_local}

    @classmethod
    def from_dict(cls, d: dict) -> "EvolutionConfig":
        """The config :meth:`as_dict` wrote."""
        local = d.get("local")
        if local is not None:
            local = dict(local)
            local = {"quadratic": QuadraticLocal, "sampled": SampledLocal}[local.pop("kind")](**local)
        return cls(local=local, global_stage=GlobalStage(**d["global_stage"]),
                   gradient_stage=GradientStage(**d.get("gradient_stage", {})), gate_local=d.get("gate_local", False))

    @property
    def local_kind(self) -> str | None:
        """``quadratic``, ``sampled`` or None (no local stage, or one with no budget)."""
        if self.local is None or not self.local.active:
            return None
        return "quadratic" if isinstance(self.local, QuadraticLocal) else "sampled"


class EvolutionResult(NamedTuple):
    """Every stage's records: the local stage's (codes, per-layer log, seconds), the global stage's (ES run,
    start evaluation, setup seconds) and the gradient stage's (codes, checks, seconds, log; between the two).
    ``seconds``: the ES's wall time (all stages). ``local_kept``: False where the config's ``gate_local`` set the
    local stage's codes aside (``local.codes`` are then the start codes; its log and seconds stay)."""

    local: LocalStageResult
    glob: GlobalStageResult
    gradient: GradientStageResult = GradientStageResult({}, 0, 0.0, [])
    local_kept: bool = True

    @property
    def seconds(self) -> float:
        return self.local.seconds + self.gradient.seconds + self.glob.result.seconds + self.glob.setup_seconds

    def state(self, rtn_state: QuantState) -> QuantState:
        """The evolved state on ``rtn_state``'s grid."""
        return self.glob.result.state(rtn_state)


def run_local(fmodel, rtn_state: QuantState, search: Split, local: QuadraticLocal | SampledLocal | None,
              start: Codes | None = None, seed: int = 0, checkpoint: Path | None = None,
              threads: int | None = 1, loss="cross_entropy", progress: bool = False) -> LocalStageResult:
    """The local stage ``local`` from ``start`` codes (default RTN's); no stage: the start codes, no log, 0 s.
    ``loss``: the task's per-sample loss (for the Fisher weighting of the quadratic stage); ``progress``: a bar
    over the layers."""
    start = dict(start if start is not None else rtn_state.codes())
    if local is None or not local.active:
        return LocalStageResult(start, [], 0.0)
    if isinstance(local, QuadraticLocal):
        return quadratic_stage(fmodel, rtn_state, search, start, samples=local.samples,
                               generations=local.generations, lam=local.lam, topk=local.topk,
                               patience=local.patience, seed=seed, checkpoint=checkpoint, threads=threads,
                               weighting=local.weighting, loss=loss, progress=progress)
    return local_stage(fmodel, rtn_state, search, evaluations=local.evaluations, lam=local.lam, p=local.p,
                       local_moves=local.moves, samples=local.samples, seed=seed, checkpoint=checkpoint,
                       threads=threads, start=start, progress=progress)


def evolve(fmodel, rtn_state: QuantState, search: Split, config: EvolutionConfig, start: Codes | None = None, *,
           seed: int = 0, loss="cross_entropy", metric="default", report=None, report_every: int = 1,
           checkpoints: tuple = (None, None), threads: int | None = 1, progress: bool = False) -> EvolutionResult:
    """Both ES stages of ``config`` from ``start`` codes (default: RTN's) on ``rtn_state``'s grid.

    ``loss``/``metric``: the global stage's per-sample loss and metric (see
    :func:`~qevo_lite.es.stages.global_stage`); ``report``: ``model -> dict`` of held-out numbers at reporting
    points (never used for selection); ``checkpoints``: the two stages' resume files (or None);
    ``threads``: CPU threads of the local stage. ``search``: a Split or a
    :class:`~qevo_lite.core.streaming.StreamedSplit`, which the local stage streams and the global stage reads
    into memory (it evaluates the whole network on every image for every candidate; a global budget of 0 skips
    it and reads nothing)."""
    local = run_local(fmodel, rtn_state, search, config.local, start, seed, checkpoints[0], threads, loss, progress)
    local, kept = gate(fmodel, rtn_state, search, local, start, loss) if config.gate_local else (local, True)
    d = config.gradient_stage
    grad = gradient_stage(fmodel, rtn_state, search, local.codes, budget=d.budget, draws=d.draws,
                          first_share=d.first_share, holdout=d.holdout, patience=d.patience, seed=seed, loss=loss,
                          progress=progress)
    g = config.global_stage
    glob = global_stage(fmodel, rtn_state, in_memory(search) if g.budget else search, grad.codes,
                        budget=g.budget, lam=g.lam, p=g.p, seed=seed,
                        loss=loss, metric=metric, report=report, report_every=report_every,
                        checkpoint=checkpoints[1], progress=progress, early_reject=g.early_reject,
                        chunk_size=g.chunk_size)
    return EvolutionResult(local, glob, grad, kept)


def gate(fmodel, rtn_state: QuantState, search, local: LocalStageResult, start: Codes | None,
         loss="cross_entropy") -> tuple[LocalStageResult, bool]:
    """``(local stage result, kept)``: ``local`` as it is if its codes lower the task's mean ``loss`` over the
    search split below the ``start`` codes' (default RTN's) or no local stage ran; else the start codes in its
    place (``kept`` False). Two forward passes over the search split, added to the local stage's seconds."""
    if not local.log:
        return local, True
    t0 = time.perf_counter()
    start = start if start is not None else rtn_state.codes()
    kept = task_loss(fmodel, rtn_state, local.codes, search, loss) < task_loss(fmodel, rtn_state, start, search, loss)
    codes = local.codes if kept else {n: c.clone() for n, c in start.items()}
    return local._replace(codes=codes, seconds=local.seconds + time.perf_counter() - t0), kept


def evolve_codes(problem: RoundingProblem, config: EvolutionConfig):
    """The ES as a registered rounding method: ``(evolved state, EvolutionResult)`` for ``problem``."""
    res = evolve(problem.fmodel, problem.rtn_state, problem.search, config, problem.start, seed=problem.seed,
                 loss=problem.loss, metric=problem.metric, report=problem.report, report_every=problem.report_every,
                 checkpoints=problem.checkpoints, threads=problem.threads, progress=problem.progress)
    return res.state(problem.rtn_state), res
