"""Tools for studying the ES: record every evaluation, compare variants over seeds, time evaluators.

These wrap :func:`qevo_lite.es.run_es` without changing it:

* :class:`RecordingEvaluator` keeps every :class:`~qevo_lite.evaluators.base.Evaluation` a run asks for,
  in order, so one can see what selection saw (e.g. the best offspring of each generation) and
  compare two evaluators candidate by candidate;
* :func:`population_best` is the best search loss among the parents after each generation
  (what selection *kept*, as opposed to the best ever seen, which ``history`` records);
* :func:`compare_variants` runs several ES settings over several seeds at the same budget, and
  :func:`mean_std` / :func:`format_mean_std` summarise them;
* :func:`time_evaluators` runs the same ES with several evaluators and reports evaluations per second.
"""
from __future__ import annotations

import time
from dataclasses import replace

from ..core.stats import mean_std
from .engine import ESConfig, ESResult, run_es


class RecordingEvaluator:
    """An evaluator that forwards everything to ``inner`` and appends each evaluation to ``records``.

    ``run_es`` calls :meth:`evaluate` once per offspring, in generation order, so with a budget of
    ``G`` generations of ``lam`` offspring, ``records[g * lam:(g + 1) * lam]`` are generation ``g + 1``'s
    offspring. Reference changes and held-out reports are not evaluations and are not recorded.
    """

    def __init__(self, inner):
        self.inner = inner
        self.records: list = []

    def evaluate(self, candidate, early_reject: bool = False, z: float = 2.0):
        ev = self.inner.evaluate(candidate, early_reject=early_reject, z=z)
        self.records.append(ev)
        return ev

    @property
    def fitnesses(self) -> list[float]:
        """Fitness of every recorded evaluation, in order."""
        return [ev.fitness for ev in self.records]

    def __getattr__(self, name):  # state, reference, reference_eval, set_reference, applied, ...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def offspring_best(records: list, lam: int) -> list[float]:
    """Per generation, the lowest fitness among its ``lam`` completely evaluated offspring
    (``nan`` for a generation whose offspring were all rejected early)."""
    if lam < 1:
        raise ValueError(f"lam must be >= 1, got {lam}")
    if len(records) % lam:
        raise ValueError(f"{len(records)} records are not whole generations of lam={lam} offspring.")
    out = []
    for i in range(0, len(records), lam):
        fits = [ev.fitness for ev in records[i:i + lam] if ev.complete]
        out.append(min(fits) if fits else float("nan"))
    return out


def population_best(history: list, records: list, config: ESConfig) -> list[float]:
    """The best search loss among the parents after each generation.

    With plus selection, or comma selection with elitism, the best candidate ever found stays
    among the parents, so this is ``history[g]["best"]``. With comma selection and no elitism
    the parents are the best offspring only, so it is :func:`offspring_best`: it can get worse.
    """
    if config.selection == "plus" or config.elitism:
        return [h["best"] for h in history]
    return offspring_best(records, config.lam)


def compare_variants(make_evaluator, base: ESConfig, variants: dict, seeds=(0, 1, 2), report=None,
                     progress: bool = False, **run_kwargs) -> dict:
    """Run every variant with every seed at the budget of ``base``.

    Args:
        make_evaluator: ``() -> evaluator``, called once per run so runs do not share a reference
            (e.g. ``lambda: IncrementalEvaluator(copy.deepcopy(model), rtn, search)``).
        base: the settings every run shares (budget included).
        variants: ``{label: {ESConfig field: value}}``, applied on top of ``base``.
        seeds: the seeds; a run's ``seed`` field is set to each in turn.
        report: passed to :func:`~qevo_lite.es.run_es` (held-out metrics of each run's best).
        run_kwargs: passed to ``run_es`` (e.g. ``sensitivity_order``, ``start``).
    Returns:
        ``{label: [ESResult per seed]}``.
    """
    if not variants:
        raise ValueError("variants is empty: pass {label: {ESConfig field: value}}.")
    return {label: [run_es(make_evaluator(), replace(base, **changes, seed=s), report=report,
                           progress=progress, **run_kwargs) for s in seeds]
            for label, changes in variants.items()}


def summarize(results: dict, metrics: dict) -> list[dict]:
    """Rows ``{"variant", name: (mean, std), ...}``: each metric ``fn(ESResult) -> float`` over the seeds.

    ``results`` is what :func:`compare_variants` returns.
    """
    return [{"variant": label, **{name: mean_std([fn(r) for r in runs]) for name, fn in metrics.items()}}
            for label, runs in results.items()]


def format_mean_std(rows: list[dict], digits: int = 3) -> str:
    """A fixed-width text table of :func:`summarize` rows, each cell ``mean +/- std``."""
    if not rows:
        raise ValueError("rows is empty.")
    names = [k for k in rows[0] if k != "variant"]
    width = max(len("variant"), *(len(r["variant"]) for r in rows))
    cell = 2 * (digits + 3) + 5
    lines = [f"{'variant':{width}s}  " + "  ".join(f"{n:>{cell}s}" for n in names)]
    for r in rows:
        lines.append(f"{r['variant']:{width}s}  " + "  ".join(
            f"{f'{r[n][0]:.{digits}f} +/- {r[n][1]:.{digits}f}':>{cell}s}" for n in names))
    return "\n".join(lines)


def time_evaluators(evaluators: dict, config: ESConfig, **run_kwargs) -> dict:
    """Run the same ES (same ``config``, same seed) with each evaluator, one after the other.

    Each evaluator is wrapped in a :class:`RecordingEvaluator`, so the fitness of every candidate
    can be compared across evaluators. Returns ``{label: {"result": ESResult, "seconds": wall time,
    "evals_per_s": evaluations per second, "fitnesses": [fitness of every evaluation]}}``.
    Timings depend on the machine and its load; compare them only within one call.
    """
    out = {}
    for label, ev in evaluators.items():
        rec = RecordingEvaluator(ev)
        t0 = time.perf_counter()
        res = run_es(rec, config, progress=False, **run_kwargs)
        seconds = time.perf_counter() - t0
        out[label] = {"result": res, "seconds": seconds, "evals_per_s": res.evaluations / max(seconds, 1e-9),
                      "fitnesses": rec.fitnesses}
    return out


def final_metric(result: ESResult, key: str = "accuracy") -> float:
    """The held-out ``key`` of a run's last report (its final best candidate)."""
    if not result.reports:
        raise ValueError("This run has no reports: pass report=... to run_es / compare_variants.")
    return result.reports[-1][key]
