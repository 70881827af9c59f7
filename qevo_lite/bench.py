"""Evaluator benchmarks: evaluations per second of naive full evaluation vs the fast evaluator (the global
stage), and of the three local evaluators (the local stage; :func:`bench_local`).

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
from .evaluators.layerwise import LayerwiseEvaluator, capture_layer_io
from .evaluators.quadratic import LayerQuadratic
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


# ----------------------------------------------------------------------------- the local evaluators
LOCAL_VARIANTS = ("dense (whole layer re-run)", "sparse output patch (LayerwiseEvaluator)", "quadratic form (H, G)")


def _candidate_sets(lq, n: int, moves: int, seed: int) -> tuple:
    """``n`` random candidates of ``moves`` code moves (+/-1, on the grid) inside one output channel each:
    ``(rows (n,), cols (n, moves), steps (n, moves))``."""
    g = torch.Generator().manual_seed(seed)
    codes = lq.codes.reshape(lq.codes.shape[0], -1)
    rows = torch.randint(codes.shape[0], (n,), generator=g)
    cols = torch.stack([torch.randperm(codes.shape[1], generator=g)[:moves] for _ in range(n)])
    steps = torch.where(torch.rand(n, moves, generator=g) < 0.5, -1, 1)
    current = codes[rows[:, None], cols]
    steps = torch.where(current + steps > lq.qmax, -1, torch.where(current + steps < lq.qmin, 1, steps))
    return rows, cols, steps


def bench_local(arch: str, bits: int = 2, samples: int = 256, candidates: int = 200000, slow_candidates: int = 200,
                moves: int = 2, dataset: str = "fashion_mnist", seed: int = 0) -> dict:
    """Evaluations per second of the three local evaluators on identical candidate sets, on the layer of
    ``arch`` with the most weights (inputs from the RTN model, targets from the FP32 model, ``samples`` search
    images). One evaluation = one candidate (``moves`` code moves inside one output channel). The quadratic
    form scores ``candidates`` in one batch; the sparse patch and the dense re-run the first
    ``slow_candidates``, one by one. Returns rates, setup seconds and the largest relative difference of the
    error changes against the dense ones (float64)."""
    splits = load_splits(dataset, search_size=max(samples, 256), seed=0)
    model, _ = load_pretrained(arch, dataset, splits=splits)
    fmodel = fold_batchnorm(model)
    state = best_rtn(fmodel, splits.search, bits).state
    name = max(state.layers, key=lambda n: state.layers[n].codes.numel())
    lq = state.layers[name]
    x, y = capture_layer_io(state.to_model(fmodel), fmodel, name, splits.search.x[:samples])
    module = fmodel.get_submodule(name)
    rows, cols, steps = _candidate_sets(lq, candidates, moves, seed)
    flat = rows[:, None] * lq.codes[0].numel() + cols

    def candidate(i):
        c = lq.codes.clone().reshape(-1)
        c[flat[i]] += steps[i].to(c.dtype)
        return {**state.codes(), name: c.reshape(lq.codes.shape)}

    out = {"arch": arch, "bits": bits, "layer": name, "weights": lq.codes.numel(), "samples": samples,
           "moves": moves, "variants": {}}
    t0 = time.perf_counter()
    quad = LayerQuadratic(module, lq, x, y)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    d_quad = quad.delta(rows, cols, steps)
    out["variants"][LOCAL_VARIANTS[2]] = {"evals_per_s": candidates / (time.perf_counter() - t0), "setup_s": setup}

    t0 = time.perf_counter()
    sparse = LayerwiseEvaluator(module, name, state, x, y)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    d_sparse = torch.tensor([(sparse.evaluate(candidate(i)).fitness - sparse.reference_eval.fitness) * sparse.numel
                             for i in range(slow_candidates)], dtype=torch.float64)
    out["variants"][LOCAL_VARIANTS[1]] = {"evals_per_s": slow_candidates / (time.perf_counter() - t0),
                                          "setup_s": setup}

    def dense_error(codes):
        with torch.no_grad():
            q = state.with_codes(codes).to_model(fmodel).get_submodule(name).double()
            return float((q(x.double()) - y.double()).pow(2).sum())
    t0 = time.perf_counter()
    e0 = dense_error(state.codes())
    d_dense = torch.tensor([dense_error(candidate(i)) - e0 for i in range(slow_candidates)], dtype=torch.float64)
    out["variants"][LOCAL_VARIANTS[0]] = {"evals_per_s": slow_candidates / (time.perf_counter() - t0), "setup_s": 0.0}
    scale = d_dense.abs().clamp(min=1e-12)
    out["max_rel_diff"] = {LOCAL_VARIANTS[2]: float(((d_quad[:slow_candidates] - d_dense).abs() / scale).max()),
                           LOCAL_VARIANTS[1]: float(((d_sparse - d_dense).abs() / scale).max())}
    base = out["variants"][LOCAL_VARIANTS[1]]["evals_per_s"]
    for v in out["variants"].values():
        v["vs_sparse"] = v["evals_per_s"] / base
    return out


def format_bench_local(results: list[dict]) -> str:
    """A Markdown table of :func:`bench_local` results."""
    lines = ["| model | bits | layer (weights) | local evaluator | evals/s | vs sparse patch | setup (s) | "
             "max rel. diff of dE vs dense |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name, v in r["variants"].items():
            diff = r["max_rel_diff"].get(name)
            lines.append(f"| {r['arch']} | {r['bits']} | {r['layer']} ({r['weights']}) | {name} | "
                         f"{v['evals_per_s']:,.0f} | {v['vs_sparse']:,.0f}x | {v['setup_s']:.2f} | "
                         f"{'-' if diff is None else f'{diff:.1e}'} |")
    return "\n".join(lines)
