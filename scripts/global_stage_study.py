"""Does the ES's second (global) stage earn its time on top of the local one? (issue 20, item 2)

For each model of a task's fast profile, each bit width and seed: the profile's local stage from RTN (the
task's settings: Fisher-weighted on the detectors), then from those same local codes the global stage the
profile ran until 2026-12-06 (the task's first ES's: 64 evaluations for classification, 24 for detection, 96 for
the autoencoder; the profiles now run none, because of what this study found) at ``--scales`` times its budget of
evaluations, in two forms:

* ``plain``: the global (1+lambda) ES on the whole search split, as the default method ran it;
* ``gated``: the same ES on the first 3/4 of the search split, its result kept only if it also lowers the
  task's loss on the last 1/4 (a slice the stage never saw; otherwise the local codes are kept).

With ``--stage gradient`` the second stage is instead the gradient-proposed moves of
:mod:`qevo_lite.es.gradient_stage` at ``--scales`` times ``--budget`` checks (one form: the stage keeps its own
held-out quarter of the search split for early stopping).

Prints the held-out headline metric (test split: reported, never used to select) after the local stage and
after each form, the gain over the local stage (mean ± std over seeds) and the second stage's seconds per seed.

    python scripts/global_stage_study.py --task detection [--bits 2,3] [--seeds 0,1,2] [--scales 1,4]
    python scripts/global_stage_study.py --task autoencoder --stage gradient --budget 200 --scales 1
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import fields, replace

import torch

from qevo_lite.es.pipeline import EvolutionConfig, GlobalStage, GradientStage, evolve, run_local
from qevo_lite.tasks import context


def _rows(split, rows: slice):
    """Rows ``rows`` of a split of any task (every field of its dataclass sliced: images, targets, boxes)."""
    return type(split)(**{f.name: getattr(split, f.name)[rows] for f in fields(split)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="detection")
    ap.add_argument("--bits", default="2,3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scales", default="1,4", help="second-stage budgets as multiples of the base budget")
    ap.add_argument("--stage", choices=("global", "gradient"), default="global", help="the second stage studied")
    ap.add_argument("--budget", type=int, default=200, help="the gradient stage's base budget (checks)")
    args = ap.parse_args()
    bits_list = [int(b) for b in args.bits.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    scales = [int(s) for s in args.scales.split(",")]
    ctx = context(args.task, "fast")
    p, task = ctx.profile, ctx.task
    head = task.metrics[0]
    stage = task.first_es["fast"].global_stage    # the global stage the fast profile ran until 2026-12-06
    if args.stage == "gradient":
        stage = GradientStage(budget=args.budget)
    cut = 3 * len(ctx.search) // 4
    fit, unused = _rows(ctx.search, slice(0, cut)), _rows(ctx.search, slice(cut, None))
    print(f"{args.task}: search {len(ctx.search)} images (gated: fit on {cut}, checked on {len(ctx.search) - cut}); "
          f"held-out {head.label} on {len(ctx.test)} test images; {args.stage} budget {stage.budget} x {scales}")
    print("| model | bits | after local | second stage | held-out | gain over local | kept (gated) | s per seed |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in p.archs():
        fmodel, _ = ctx.model(arch)
        for bits in bits_list:
            rtn = ctx.rtn(arch, bits)["state"]
            local = {s: run_local(fmodel, rtn, ctx.search, p.methods.es.local, seed=s, loss=task.es_loss,
                                  threads=ctx.local_threads).codes for s in seeds}
            before = {s: ctx.evaluate(rtn.with_codes(local[s]).to_model(fmodel), "test")[head.key] for s in seeds}
            for scale in scales:
                scaled = replace(stage, budget=scale * stage.budget)
                glob = EvolutionConfig(None, scaled) if args.stage == "global" else \
                    EvolutionConfig(None, GlobalStage(), scaled)
                forms = (("plain", ctx.search), ("gated", fit)) if args.stage == "global" else (("plain", ctx.search),)
                for form, search in forms:
                    after, kept, seconds = [], 0, 0.0
                    for s in seeds:
                        t0 = time.perf_counter()
                        res = evolve(fmodel, rtn, search, glob, local[s], seed=s, loss=task.es_loss,
                                     metric=task.es_metric)
                        seconds += time.perf_counter() - t0
                        codes = res.state(rtn).codes()
                        if form == "gated":   # keep the stage's result only if the unused slice agrees
                            local_model = rtn.with_codes(local[s]).to_model(fmodel)
                            if task.rtn_score(res.state(rtn).to_model(fmodel), unused) < task.rtn_score(local_model, unused):
                                kept += 1
                            else:
                                codes = local[s]
                        after.append(ctx.evaluate(rtn.with_codes(codes).to_model(fmodel), "test")[head.key])
                    gains = [head.improvement(a, before[s]) for a, s in zip(after, seeds)]
                    gain = f"{head.scale * statistics.mean(gains):+.{head.digits + 1}f}"
                    print(f"| {arch} | W{bits} | {head.fmt(statistics.mean(before.values()))} | "
                          f"{form}, {scaled.budget} {'evaluations' if args.stage == 'global' else 'checks'} | "
                          f"{head.fmt(statistics.mean(after), statistics.stdev(after))} | "
                          f"{gain} ± {head.scale * statistics.stdev(gains):.{head.digits + 1}f} | "
                          f"{f'{kept} of {len(seeds)}' if form == 'gated' else '-'} | "
                          f"{seconds / len(seeds):.1f} |", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
