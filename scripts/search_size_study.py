"""How the global stage's held-out gain depends on the size of the search split (the peers issue, item 4).

For each model at W2, seeds 0-2: the quadratic local stage from RTN on the fast profile's settings (256 of
the first 1,024 search images), then the global (1+8) ES, 64 evaluations of the search cross-entropy, on the
first n images of the 8,192 held back from pretraining (n = 1,024 ... 8,192). Prints the held-out accuracy
after the local stage and after the global stage (5,000 test images; reported, never used to select).

    python scripts/search_size_study.py [--sizes 1024,2048,4096,8192] [--models vgg,resnet]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from qevo_lite.core.data import Split, load_splits
from qevo_lite.core.evaluate import evaluate
from qevo_lite.es.pipeline import EvolutionConfig, evolve, run_local
from qevo_lite.tasks import context


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,2048,4096,8192")
    ap.add_argument("--models", default="vgg,resnet")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    ctx = context("classification", "fast")
    p = ctx.profile
    pool = load_splits(p.data.dataset, search_size=max(sizes), seed=p.data.split_seed).search
    assert torch.equal(pool.x[:len(ctx.search)], ctx.search.x), "the pool must start with the profile's search split"
    print("| model | search images | held-out after local (%) | after global (%) | global gain (points) | seconds |")
    print("|---|---|---|---|---|---|")
    for label in args.models.split(","):
        arch = p.grid.models[label]
        fmodel, _ = ctx.model(arch)
        rtn = ctx.rtn(arch, 2)["state"]
        local = {s: run_local(fmodel, rtn, ctx.search, p.methods.es.local, seed=s, loss=ctx.task.es_loss).codes for s in seeds}
        # the global stage alone (as the profile ran it until 2026-12-06), from each seed's local codes
        global_only = EvolutionConfig(None, ctx.task.first_es["fast"].global_stage)
        before = [evaluate(rtn.with_codes(local[s]).to_model(fmodel), ctx.test)["accuracy"] for s in seeds]
        for n in sizes:
            search = Split(pool.x[:n], pool.y[:n])
            after, t0 = [], time.perf_counter()
            for s in seeds:
                res = evolve(fmodel, rtn, search, global_only, local[s], seed=s)
                after.append(evaluate(res.state(rtn).to_model(fmodel), ctx.test)["accuracy"])
            gains = [100 * (a - b) for a, b in zip(after, before)]
            print(f"| {arch} | {n} | {100 * statistics.mean(before):.2f} | {100 * statistics.mean(after):.2f} ± "
                  f"{100 * statistics.stdev(after):.2f} | {statistics.mean(gains):+.2f} ± {statistics.stdev(gains):.2f} | "
                  f"{(time.perf_counter() - t0) / len(seeds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
