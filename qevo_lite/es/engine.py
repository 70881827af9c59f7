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
from ..evaluators.base import Evaluation
from ..evaluators.full import FullEvaluator
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


def run_es(evaluator: FullEvaluator, config: ESConfig, report=None, layers=None, sensitivity_order=None,
           checkpoint: str | Path | None = None, checkpoint_every: int = 10, progress: bool = True,
           start: dict | None = None) -> ESResult:
    """Run the ES from ``start`` (default: the evaluator's reference, i.e. the RTN codes).

    Args:
        evaluator: a :class:`~qevo_lite.evaluators.full.FullEvaluator`, ``IncrementalEvaluator`` or
            ``LayerwiseEvaluator``; its ``state`` gives the grid and scales.
        config: the :class:`ESConfig`.
        report: optional ``report(model) -> dict`` of held-out metrics, called with the best
            candidate applied every ``config.report_every`` generations and at the end.
        layers: the layers the ES may mutate (default: all of the state's).
        sensitivity_order: layer names, most sensitive first (for ``layer_choice="sensitivity"``).
        checkpoint: a file to save the run to every ``checkpoint_every`` generations and on
            Ctrl-C; if it exists when the run starts, the run resumes from it.
    Returns:
        an :class:`ESResult`; ``history`` has one dict per generation
        (generation, best, mean, best_metric, p, evaluations, seconds, accepted: the generation's best child
        beat the parent, successes: how many of its children did).
    """
    state = evaluator.state
    names = list(layers or state.layers)
    probs = list(layer_weights(state, config.layer_choice, layers=names).values())
    if config.layer_choice == "sensitivity" and not sensitivity_order:
        raise ValueError("layer_choice='sensitivity' needs sensitivity_order (see qevo_lite.quant.sensitivity).")
    order = [n for n in (sensitivity_order or []) if n in names]
    g = torch.Generator().manual_seed(config.seed)
    checkpoint = Path(checkpoint) if checkpoint else None

    if start is not None:
        evaluator.set_reference(start)
    parents = [(dict(evaluator.reference), evaluator.reference_eval)]
    best = parents[0]
    p, gen, evals, elapsed, history, reports, successes = config.p, 0, 0, 0.0, [], [], []
    since_improvement = 0
    if checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, weights_only=False)
        if ck["config"] != asdict(config):
            raise ValueError(f"{checkpoint} was written by a run with other settings; delete it or pass another path.")
        g.set_state(ck["rng"])
        p, gen, evals, elapsed = ck["p"], ck["generation"], ck["evaluations"], ck["seconds"]
        history, reports, successes, since_improvement = ck["history"], ck["reports"], ck["successes"], ck["since"]
        evaluator.set_reference(ck["parents"][0])
        parents = [(c, evaluator.evaluate(c)) for c in ck["parents"]]
        evaluator.evaluations -= len(parents)
        best = (ck["best"], evaluator.evaluate(ck["best"]))
        evaluator.evaluations -= 1

    def save():
        if checkpoint is not None:
            save_torch({"config": asdict(config), "rng": g.get_state(), "p": p, "generation": gen,
                          "evaluations": evals, "seconds": elapsed, "history": history, "reports": reports,
                          "successes": successes, "since": since_improvement,
                          "parents": [c for c, _ in parents], "best": best[0]}, checkpoint)

    def do_report():
        if report is not None:
            with evaluator.applied(best[0]) as model:
                reports.append({"generation": gen, "evaluations": evals, **report(model)})

    def done() -> bool:
        return ((config.max_evaluations is not None and evals >= config.max_evaluations)
                or (config.max_generations is not None and gen >= config.max_generations)
                or (config.max_seconds is not None and elapsed >= config.max_seconds)
                or (config.patience is not None and since_improvement >= config.patience))

    total = config.max_evaluations or (config.max_generations and config.max_generations * config.lam)
    bar = tqdm(total=total, initial=evals, desc="ES", disable=not progress, unit="eval")
    if gen == 0 and not reports:
        do_report()
    interrupted = False
    t_start = time.perf_counter() - elapsed
    unfinished = None  # (rng state, evaluations) at the start of a generation whose offspring are being made
    try:
        while not done():
            unfinished = (g.get_state(), evals)
            offspring = []
            for _ in range(config.lam):
                if config.mu > 1 and config.crossover and len(parents) > 1:
                    i, j = torch.randperm(len(parents), generator=g)[:2].tolist()
                    base = crossover_uniform(parents[i][0], parents[j][0], g)
                else:
                    base = parents[int(torch.randint(len(parents), (1,), generator=g))][0]
                layer = pick_layer(names, probs, config.layer_choice, gen, g, order, config.generations_per_layer)
                child = mutate(base, state, layer, config.mutation, p, g)
                ev = evaluator.evaluate(child, early_reject=config.early_reject, z=config.reject_z)
                offspring.append((child, ev))
                evals += 1
                bar.update(1)
            unfinished = None
            complete = [o for o in offspring if o[1].complete]
            pool = (parents + complete) if config.selection == "plus" else (complete or offspring)
            pool.sort(key=lambda c: c[1].fitness)
            new_parents = pool[:config.mu]
            gen_best = min(complete, key=lambda c: c[1].fitness) if complete else None
            success = gen_best is not None and gen_best[1].fitness < parents[0][1].fitness
            wins = sum(1 for o in complete if o[1].fitness < parents[0][1].fitness)   # successful mutations
            improved = gen_best is not None and gen_best[1].fitness < best[1].fitness
            if improved:
                best, since_improvement = gen_best, 0
            else:
                since_improvement += 1
            if config.selection == "comma" and config.elitism and all(c is not best[0] for c, _ in new_parents):
                new_parents = new_parents[:-1] + [best]
            parents = new_parents
            if parents[0][0] is not evaluator.reference:
                evaluator.set_reference(parents[0][0], parents[0][1])
            gen += 1
            successes.append(wins)
            if config.adapt == "one_fifth" and gen % config.adapt_window == 0:
                p = one_fifth_rule(p, successes[-config.adapt_window:], config.lam, config.p_min)
            elapsed = time.perf_counter() - t_start
            fits = [o[1].fitness for o in complete] or [float("nan")]
            history.append({"generation": gen, "best": best[1].fitness, "mean": sum(fits) / len(fits),
                            "best_metric": best[1].metric, "p": p, "evaluations": evals, "seconds": elapsed,
                            "accepted": bool(success), "successes": wins, "complete": len(complete)})
            bar.set_postfix(best=f"{best[1].fitness:.4f}", p=f"{p:.2g}")
            if config.report_every and gen % config.report_every == 0:
                do_report()
            if checkpoint is not None and gen % checkpoint_every == 0:
                save()
    except KeyboardInterrupt:
        interrupted = True
        if unfinished is not None:  # drop the half-made generation, so a resumed run redoes it exactly
            g.set_state(unfinished[0])
            evals = unfinished[1]
        print(f"ES interrupted after {gen} generations" + (f"; resume from {checkpoint}" if checkpoint else ""))
    finally:
        bar.close()
    if not interrupted and (not reports or reports[-1]["generation"] != gen):
        do_report()
    save()
    return ESResult(best[0], best[1], history, reports, evals, gen, elapsed, p, interrupted)
