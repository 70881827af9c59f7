"""Every method as a curve of budgets: held-out metric against wall time, seeds as error bars, FP32 as a line.

    python scripts/budget_curves.py --task classification --model vgg --bits 2 --seeds 0,1,2
    python scripts/budget_curves.py --profile full --task classification --model vgg --bits 2   # on a GPU

Each method runs from the RTN state of the task's ``demo`` profile, or with ``--profile full`` of its full profile
(its models and data, AdaRound and block reconstruction up to 10,000 steps as the papers run them, more
calibration and search images: :data:`BUDGETS`), its peers at their validated settings (docs/tuning.md), at
several budgets: GPTQ's calibration images, AdaRound's and block reconstruction's Adam steps per layer / block,
the search images the ES's local stage builds each layer's quadratic form from (its
generations, early stopping and global stage as in the profile, which has no global stage since 2026-12-06: the
committed curves ran the global stage the profile had then; at vgg_small W2, 500, 2,000 and 8,000
generations per layer all gave about 90.7% in 10-11 s, as each layer stops after ``patience`` generations
without gain). The wall time is the
method's own from the RTN state (:func:`qevo_lite.methods.choose_codes`: layer captures included, no held-out
reports: the ES runs without them here). The held-out metric is the task's headline one on its test split;
nothing is chosen on it. Writes one JSON line per (method, budget, seed) to ``--out`` (rows already there are
reused, so an interrupted run resumes) and the figure to ``--figure``. One process; time it alone.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from qevo_lite.experiment.curves import curve_points, curve_targets, curve_targets_markdown
from qevo_lite.viz.experiment_plots import plot_budget_curves
from qevo_lite.methods import config_dict, get_method
from qevo_lite.tasks import context

# Each method's budget field and its three budgets, per profile: the demo profile's (the README's curves, on a
# CPU) and the full profile's (a GPU: AdaRound and block reconstruction to 10,000 steps per layer / block, as the
# papers run them, 10k-20k; GPTQ and the ES up to the full profile's 4,096 search images).
BUDGETS = {"demo": {"gptq": ("samples", (128, 256, 1024)), "adaround": ("steps", (250, 1000, 4000)),
                    "brecq": ("steps", (250, 1000, 4000)), "es": ("images", (64, 256, 1024))},
           "full": {"gptq": ("samples", (256, 1024, 4096)), "adaround": ("steps", (1000, 4000, 10000)),
                    "brecq": ("steps", (1000, 4000, 10000)), "es": ("images", (256, 1024, 4096))}}


def configs(profile, steps=None) -> list[tuple[str, str, int, object]]:
    """``(method name, budget name, budget, config)`` for every method of ``profile`` (its peers and its ES) at
    the budgets :data:`BUDGETS` gives the profile (the full profile's, else the demo's); ``steps``: AdaRound's
    and block reconstruction's step budgets instead."""
    budgets = BUDGETS["full" if profile.name == "full" else "demo"]
    out = []
    for config in profile.methods.peers + (profile.methods.es,):
        name = get_method(config).name
        field, values = budgets[name]
        if field == "steps" and steps:
            values = steps
        if field in ("samples", "images"):   # no more images than the search split has, and three budgets
            size = profile.data.search_size  # (detection's 192 canvases: 64, 128, 192)
            values = sorted({min(v, size) for v in values})
            if len(values) < 3:
                values = sorted({max(1, round(size * f)) for f in (1 / 3, 2 / 3, 1)})
        for v in values:
            config_v = (replace(config, local=replace(config.local, samples=v)) if name == "es"
                        else replace(config, **{field: v}))
            out.append((name, field, v, config_v))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="demo", choices=("demo", "full"),
                    help="demo: the fast profile's models at the demo's settings (CPU); full: the full profile "
                         "(CIFAR-10 models, steps to 10,000; a GPU)")
    ap.add_argument("--task", default="classification")
    ap.add_argument("--model", default="vgg", help="a model label of the task's profiles")
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", default=None, help="AdaRound's and block reconstruction's step budgets, e.g. "
                    "250,1000 (default: 250,1000,4000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/budget_curves.jsonl")
    ap.add_argument("--figure", default=None, help="PNG path (default: next to --out)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ctx = context(args.task, args.profile, device="cuda" if torch.cuda.is_available() else "cpu")
    arch = ctx.task.profiles["fast" if args.profile == "demo" else args.profile].grid.models[args.model]
    head = ctx.task.metrics[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done[(r["task"], r["arch"], r["bits"], json.dumps(r["config"], sort_keys=True), r["seed"])] = r
    rows = []
    steps = [int(v) for v in args.steps.split(",")] if args.steps else None
    for name, field, budget, config in configs(ctx.profile, steps):
        seeds = [int(s) for s in args.seeds.split(",")] if get_method(config).seeded else [0]
        for seed in seeds:
            key = (args.task, arch, args.bits, json.dumps(config_dict(config), sort_keys=True), seed)
            if key not in done:
                res = ctx.peer(arch, args.bits, config, seed)
                done[key] = {"task": args.task, "arch": arch, "bits": args.bits, "config": config_dict(config),
                             "seed": seed, "method": name, "budget_name": field, "budget": budget,
                             "seconds": res["seconds"], "test": res["test"], "threads": args.threads}
                with out.open("a") as f:
                    f.write(json.dumps(done[key]) + "\n")
                print(f"{name} {field} {budget} seed {seed}: {head.fmt(res['test'][head.key])} in "
                      f"{res['seconds']:.1f} s", flush=True)
            rows.append(done[key])
    points = curve_points(rows, head)
    for p in points:
        value = head.fmt(p.value, p.std if p.seeds > 1 else None)
        print(f"| {p.label} | {p.budget} {p.unit} | {value} | {p.seconds:.1f} | {p.seeds} |")
    print("\n".join(["", *curve_targets_markdown(curve_targets(points, head, get_method("es").label), head)]))
    fp32 = ctx.fp32(arch)["test"][head.key]
    figure = Path(args.figure) if args.figure else out.with_name(f"{args.task}_{arch}_W{args.bits}_budgets.png")
    plot_budget_curves(points, head, fp32, f"{arch} W{args.bits}: held-out {head.label} vs wall time "
                       f"(seeds as error bars)", path=figure)
    print(f"wrote {figure}")


if __name__ == "__main__":
    main()
