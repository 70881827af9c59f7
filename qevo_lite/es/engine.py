"""The evolution strategy over quantization codes.

Each generation, ``lam`` offspring are made from the ``mu`` parents (uniform crossover of
two parents when ``mu > 1``, then a mutation of one layer), evaluated on the search split,
and the next parents selected:

* ``plus``  -- (mu+lambda): the best ``mu`` of parents and offspring (elitist by construction);
* ``comma`` -- (mu,lambda): the best ``mu`` offspring; with ``elitism`` the best-ever
  candidate replaces the worst of them.

(1+lambda) is ``mu=1, selection="plus"``. The mutation rate ``p`` (the share of a layer's
weights moved) can adapt by the 1/5 success rule (below). The run stops on a budget of
evaluations, generations or seconds, or after ``patience`` generations without
improvement. The 1/5 rule is Rechenberg's, per mutation: every ``adapt_window`` generations, the share
of the window's offspring that beat the best parent of their generation (a rejected or early-rejected
child is a failure) multiplies ``p`` by 1.22 when above 1/5, by 0.82 when below, and keeps it when exactly
1/5. Held-out metrics are computed only by the ``report`` callback at reporting
points and never used for selection.

Runs are reproducible (one seeded ``torch.Generator``), show a ``tqdm`` progress bar,
can be checkpointed to disk (atomic write) and resumed; a resumed run ends exactly
where an uninterrupted one with the same seed ends (for evaluation or generation budgets).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core.io import save_torch
from ..evaluators.base import Evaluation, Evaluator
from .operators import LAYER_CHOICES, MUTATIONS, crossover_uniform, layer_weights, mutate, pick_layer
from ..quant.grid import QuantState


@dataclass
class ESConfig:
    """Settings of one ES run (see the module docstring)."""

    mu: int = 1
    lam: int = 8
    selection: str = "plus"
    elitism: bool = True
    p: float = 0.002
    mutation: str = "uniform"
    layer_choice: str = "size"
    generations_per_layer: int = 10
    crossover: bool = True
    adapt: str = "one_fifth"       # or "none"
    adapt_window: int = 10
    p_min: float = 1e-5
    max_evaluations: int | None = None
    max_generations: int | None = None
    max_seconds: float | None = None
    patience: int | None = None
    early_reject: bool = False
    reject_z: float = 2.0
    report_every: int = 0          # generations between held-out reports (0: only at the end)
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.p <= 1:
            raise ValueError(f"p must be in (0, 1], got {self.p}")
        if not isinstance(self.lam, int) or self.lam < 1:
            raise ValueError(f"lam (lambda, offspring per generation) must be an int >= 1, got {self.lam!r}")
        if not isinstance(self.mu, int) or self.mu < 1:
            raise ValueError(f"mu (parents) must be an int >= 1, got {self.mu!r}")
        if self.selection not in ("plus", "comma"):
            raise ValueError(f"selection must be 'plus' or 'comma', got {self.selection!r}")
        if self.selection == "comma" and self.mu > self.lam:
            raise ValueError(f"comma selection needs mu <= lambda, got mu={self.mu}, lam={self.lam}")
        if self.mutation not in MUTATIONS:
            raise ValueError(f"Unknown mutation {self.mutation!r}; choose one of {MUTATIONS}")
        if self.layer_choice not in LAYER_CHOICES:
            raise ValueError(f"Unknown layer choice {self.layer_choice!r}; choose one of {LAYER_CHOICES}")
        if self.adapt not in ("none", "one_fifth"):
            raise ValueError(f"adapt must be 'none' or 'one_fifth', got {self.adapt!r}")
        budgets = (self.max_evaluations, self.max_generations, self.max_seconds, self.patience)
        if all(b is None for b in budgets):
            raise ValueError("Empty budget: set max_evaluations, max_generations, max_seconds or patience.")
        if any(b is not None and b <= 0 for b in budgets):
            raise ValueError(f"Budgets must be positive, got {budgets}")
        if self.early_reject and self.selection == "comma":
            raise ValueError("early_reject compares offspring with their parent, which only makes sense "
                             "with plus selection.")


@dataclass
class ESResult:
    """What a run produced: the best codes and their search fitness, the history and the counters."""

    best: dict
    best_eval: Evaluation
    history: list = field(default_factory=list)
    reports: list = field(default_factory=list)
    evaluations: int = 0
    generations: int = 0
    seconds: float = 0.0
    p: float = 0.0
    interrupted: bool = False

    def state(self, rtn: QuantState) -> QuantState:
        """The best candidate as a :class:`QuantState` (scales and grid from ``rtn``)."""
        return rtn.with_codes({n: c.clone() for n, c in self.best.items()})


def one_fifth_rule(p: float, successes, lam: int, p_min: float) -> float:
    """Rechenberg's 1/5 success rule, per offspring: ``successes`` are the successful children (those that
    beat their parent) of each generation of one window, ``lam`` children per generation. With ``rate`` their
    sum over ``len(successes) * lam``, the mutation rate ``p`` is multiplied by 1.22 above 1/5, by 0.82 below,
    kept at exactly 1/5, and held within ``[p_min, 1]``."""
    rate = sum(successes) / (len(successes) * lam)
    return min(1.0, max(p_min, p * (1.22 if rate > 0.2 else 0.82 if rate < 0.2 else 1.0)))


class _Run:
    """The state of one run of :func:`run_es` and its steps (resume, offspring, selection, bookkeeping), so that
    the generation loop reads as the algorithm. Every random draw comes from ``self.g``, in the order an
    uninterrupted run makes them."""

    def __init__(self, evaluator: Evaluator, config: ESConfig, report, names: list, order: list,
                 checkpoint: Path | None):
        self.ev, self.config, self.report_fn, self.names, self.order = evaluator, config, report, names, order
        self.probs = list(layer_weights(evaluator.state, config.layer_choice, layers=names).values())
        self.g = torch.Generator().manual_seed(config.seed)
        self.checkpoint = checkpoint
        self.parents = [(dict(evaluator.reference), evaluator.reference_eval)]
        self.best = self.parents[0]
        self.p, self.gen, self.evals, self.elapsed = config.p, 0, 0, 0.0
        self.history, self.reports, self.successes, self.since_improvement = [], [], [], 0

    def resume(self) -> None:
        """Continue from the checkpoint file when it exists (ValueError when it was written with other settings)."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return
        ck = torch.load(self.checkpoint, weights_only=False)
        if ck["config"] != asdict(self.config):
            raise ValueError(f"{self.checkpoint} was written by a run with other settings; delete it or pass another path.")
        self.g.set_state(ck["rng"])
        self.p, self.gen, self.evals, self.elapsed = ck["p"], ck["generation"], ck["evaluations"], ck["seconds"]
        self.history, self.reports, self.successes = ck["history"], ck["reports"], ck["successes"]
        self.since_improvement = ck["since"]
        self.ev.set_reference(ck["parents"][0])
        self.parents = [(c, self.ev.evaluate(c)) for c in ck["parents"]]
        self.ev.evaluations -= len(self.parents)
        self.best = (ck["best"], self.ev.evaluate(ck["best"]))
        self.ev.evaluations -= 1

    def save(self) -> None:
        if self.checkpoint is not None:
            save_torch({"config": asdict(self.config), "rng": self.g.get_state(), "p": self.p, "generation": self.gen,
                        "evaluations": self.evals, "seconds": self.elapsed, "history": self.history,
                        "reports": self.reports, "successes": self.successes, "since": self.since_improvement,
                        "parents": [c for c, _ in self.parents], "best": self.best[0]}, self.checkpoint)

    def do_report(self) -> None:
        if self.report_fn is not None:
            with self.ev.applied(self.best[0]) as model:
                self.reports.append({"generation": self.gen, "evaluations": self.evals, **self.report_fn(model)})

    def done(self) -> bool:
        c = self.config
        return ((c.max_evaluations is not None and self.evals >= c.max_evaluations)
                or (c.max_generations is not None and self.gen >= c.max_generations)
                or (c.max_seconds is not None and self.elapsed >= c.max_seconds)
                or (c.patience is not None and self.since_improvement >= c.patience))

    def child(self) -> tuple:
        """One offspring ``(codes, Evaluation)``: crossover of two parents (mu > 1) or a copy of one, then a
        mutation of one layer."""
        c, g, parents = self.config, self.g, self.parents
        if c.mu > 1 and c.crossover and len(parents) > 1:
            i, j = torch.randperm(len(parents), generator=g)[:2].tolist()
            base = crossover_uniform(parents[i][0], parents[j][0], g)
        else:
            base = parents[int(torch.randint(len(parents), (1,), generator=g))][0]
        layer = pick_layer(self.names, self.probs, c.layer_choice, self.gen, g, self.order, c.generations_per_layer)
        child = mutate(base, self.ev.state, layer, c.mutation, self.p, g)
        return child, self.ev.evaluate(child, early_reject=c.early_reject, z=c.reject_z)

    def select(self, offspring: list) -> None:
        """Choose the next parents, update the best-ever candidate, the 1/5 rule and the history."""
        c, parents = self.config, self.parents
        complete = [o for o in offspring if o[1].complete]
        pool = (parents + complete) if c.selection == "plus" else (complete or offspring)
        pool.sort(key=lambda x: x[1].fitness)
        new_parents = pool[:c.mu]
        gen_best = min(complete, key=lambda x: x[1].fitness) if complete else None
        success = gen_best is not None and gen_best[1].fitness < parents[0][1].fitness
        wins = sum(1 for o in complete if o[1].fitness < parents[0][1].fitness)   # successful mutations
        if gen_best is not None and gen_best[1].fitness < self.best[1].fitness:
            self.best, self.since_improvement = gen_best, 0
        else:
            self.since_improvement += 1
        if c.selection == "comma" and c.elitism and all(x is not self.best[0] for x, _ in new_parents):
            new_parents = new_parents[:-1] + [self.best]
        self.parents = new_parents
        if self.parents[0][0] is not self.ev.reference:
            self.ev.set_reference(self.parents[0][0], self.parents[0][1])
        self.gen += 1
        self.successes.append(wins)
        if c.adapt == "one_fifth" and self.gen % c.adapt_window == 0:
            self.p = one_fifth_rule(self.p, self.successes[-c.adapt_window:], c.lam, c.p_min)
        fits = [o[1].fitness for o in complete] or [float("nan")]
        self.history.append({"generation": self.gen, "best": self.best[1].fitness, "mean": sum(fits) / len(fits),
                             "best_metric": self.best[1].metric, "p": self.p, "evaluations": self.evals,
                             "seconds": None, "accepted": bool(success), "successes": wins,
                             "complete": len(complete)})

    def result(self, interrupted: bool) -> ESResult:
        return ESResult(self.best[0], self.best[1], self.history, self.reports, self.evals, self.gen, self.elapsed,
                        self.p, interrupted)


def run_es(evaluator: Evaluator, config: ESConfig, report=None, layers=None, sensitivity_order=None,
           checkpoint: str | Path | None = None, checkpoint_every: int = 10, progress: bool = True,
           start: dict | None = None) -> ESResult:
    """Run the ES from ``start`` (default: the evaluator's reference, i.e. the RTN codes).

    Args:
        evaluator: any :class:`~qevo_lite.evaluators.base.Evaluator` (the full network, incremental or
            layer-wise one); its ``state`` gives the grid and scales.
        config: the :class:`ESConfig`.
        report: optional ``report(model) -> dict`` of held-out metrics, called with the best
            candidate applied every ``config.report_every`` generations and at the end.
        layers: the layers the ES may mutate (default: all of the state's).
        sensitivity_order: layer names, most sensitive first (for ``layer_choice="sensitivity"``).
        checkpoint: a file to save the run to every ``checkpoint_every`` generations and on
            Ctrl-C; if it exists when the run starts, the run resumes from it.
    Returns:
        an :class:`ESResult`; ``history`` has one dict per generation
        (generation, best, mean, best_metric, p, evaluations, seconds: the run's wall time so far without the
        held-out reports, accepted: the generation's best child beat the parent, successes: how many of its
        children did).
    """
    names = list(layers or evaluator.state.layers)
    if config.layer_choice == "sensitivity" and not sensitivity_order:
        raise ValueError("layer_choice='sensitivity' needs sensitivity_order (see qevo_lite.quant.sensitivity).")
    order = [n for n in (sensitivity_order or []) if n in names]
    if start is not None:
        evaluator.set_reference(start)
    run = _Run(evaluator, config, report, names, order, Path(checkpoint) if checkpoint else None)
    run.resume()
    total = config.max_evaluations or (config.max_generations and config.max_generations * config.lam)
    bar = tqdm(total=total, initial=run.evals, desc="ES", disable=not progress, unit="eval")
    if run.gen == 0 and not run.reports:
        run.do_report()
    try:
        interrupted = _generations(run, bar, checkpoint_every)
    finally:
        bar.close()
    if interrupted:
        print(f"ES interrupted after {run.gen} generations" + (f"; resume from {checkpoint}" if checkpoint else ""))
    elif not run.reports or run.reports[-1]["generation"] != run.gen:
        run.do_report()
    run.save()
    return run.result(interrupted)


def _generations(run: _Run, bar, checkpoint_every: int) -> bool:
    """Run the generations of ``run`` until it is done; True if Ctrl-C stopped it first. A generation interrupted
    while its offspring are made is dropped (random state and count restored), so a resumed run redoes it
    exactly. Held-out reports are not counted in the ES's time."""
    config = run.config
    t_start = time.perf_counter() - run.elapsed
    unfinished = None  # (rng state, evaluations) at the start of a generation whose offspring are being made
    try:
        while not run.done():
            unfinished = (run.g.get_state(), run.evals)
            offspring = []
            for _ in range(config.lam):
                offspring.append(run.child())
                run.evals += 1
                bar.update(1)
            unfinished = None
            run.select(offspring)
            run.elapsed = run.history[-1]["seconds"] = time.perf_counter() - t_start
            bar.set_postfix(best=f"{run.best[1].fitness:.4f}", p=f"{run.p:.2g}")
            if config.report_every and run.gen % config.report_every == 0:
                t_report = time.perf_counter()
                run.do_report()
                t_start += time.perf_counter() - t_report
            if run.checkpoint is not None and run.gen % checkpoint_every == 0:
                run.save()
    except KeyboardInterrupt:
        if unfinished is not None:
            run.g.set_state(unfinished[0])
            run.evals = unfinished[1]
        return True
    return False
