"""Evaluator benchmark: evaluations per second of naive full evaluation vs the fast evaluator.

All evaluators run the same ES (same seed, same operators) in one process, one after
the other, so the ratio is measured under the same machine load. The variants add one
idea each: re-running only the graph downstream of the changed layer (exact), patching
the changed layer's output from the changed weights only (the sparse update), and early
rejection. The naive and the incremental evaluators must produce the same fitness values
(to float rounding) and the same trajectory; early rejection may change the trajectory
(it can reject a candidate that would have won on the whole search split), so its final
search fitness is printed next to it.
"""
from __future__ import annotations

import time
from functools import partial

import torch

from .quant.rtn import best_rtn
from .tasks import load_pretrained
from .core.data import load_splits
from .es.engine import ESConfig, run_es
from .evaluators.full import FullEvaluator
from .evaluators.incremental import IncrementalEvaluator
from .quant.fold import fold_batchnorm

VARIANTS = (("naive (full network)", FullEvaluator, False),
            ("incremental, downstream re-run only", partial(IncrementalEvaluator, sparse_update=False), False),
            ("incremental + sparse layer update", IncrementalEvaluator, False),
            ("incremental + sparse + early rejection", IncrementalEvaluator, True))


def bench_model(arch: str, bits: int = 2, generations: int = 25, lam: int = 8, search_size: int = 2048,
                seed: int = 0, dataset: str = "fashion_mnist", mutation: str = "uniform",
                layer_choice: str = "size") -> dict:
    """Run the three evaluators on one pretrained model; returns per-variant rates and the checks."""
    splits = load_splits(dataset, search_size=search_size, seed=0)
    model, _ = load_pretrained(arch, dataset, splits=splits)
    fmodel = fold_batchnorm(model)
    rtn = best_rtn(fmodel, splits.search, bits)
    out = {"arch": arch, "bits": bits, "rule": rtn.config.scale_rule, "variants": {}}
    runs = {}
    for name, cls, early in VARIANTS:
        ev = cls(fold_batchnorm(model), rtn.state, splits.search)
        cfg = ESConfig(lam=lam, max_generations=generations, early_reject=early, seed=seed, mutation=mutation,
                       layer_choice=layer_choice)
        t0 = time.perf_counter()
        res = run_es(ev, cfg, progress=False)
        seconds = time.perf_counter() - t0
        runs[name] = res
        out["variants"][name] = {"evals_per_s": res.evaluations / seconds, "seconds": seconds,
                                 "best_fitness": res.best_eval.fitness, "best_accuracy": res.best_eval.metric}
    naive = runs[VARIANTS[0][0]]
    incs = [runs[VARIANTS[1][0]], runs[VARIANTS[2][0]]]
    out["same_fitness_values"] = all(abs(a["best"] - b["best"]) <= 1e-6 * max(1.0, abs(a["best"]))
                                     for inc in incs for a, b in zip(naive.history, inc.history))
    out["same_trajectory"] = all(all(torch.equal(naive.best[n], inc.best[n]) for n in naive.best) and
                                 [h["accepted"] for h in naive.history] == [h["accepted"] for h in inc.history]
                                 for inc in incs)
    base = out["variants"][VARIANTS[0][0]]["evals_per_s"]
    for v in out["variants"].values():
        v["speedup"] = v["evals_per_s"] / base
    return out


def format_bench(results: list[dict]) -> str:
    """A Markdown table of :func:`bench_model` results."""
    lines = ["| model | bits | evaluator | evals/s | speed-up | best search loss | best search acc |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for name, v in r["variants"].items():
            acc = "" if v["best_accuracy"] is None else f"{v['best_accuracy']:.3f}"
            lines.append(f"| {r['arch']} | {r['bits']} | {name} | {v['evals_per_s']:.1f} | {v['speedup']:.1f}x "
                         f"| {v['best_fitness']:.4f} | {acc} |")
    checks = [f"{r['arch']}: naive and both incremental evaluators give the same fitness values: {r['same_fitness_values']}, "
              f"the same trajectory: {r['same_trajectory']}" for r in results]
    return "\n".join(lines + [""] + checks)
