"""Tune a rounding method's settings on the validation slice, never on the test split.

The validation slice is the one the ES's own settings were chosen on: images 1,024-2,047 of the classification
task's held-back pool (training images never used in pretraining; the first 1,024 are the search split every
method fits). For the autoencoder (``--task autoencoder``) it is the same slice of its search pool (normal-class
images held back from training; the first 1,024 are its search split), scored by the reconstruction MSE. For
detection (``--task detection``) it is canvases 192-575 of the search pool (the same generator continued: the
first 192 are the fast profile's search split, drawn from training glyphs the detector never saw), scored by
mAP@[.5:.95]. Each setting of the grid (the cartesian product of ``--grid``) runs the registered method
(:mod:`qevo_lite.methods`) from the RTN state of the fast profile's models, and is scored by its accuracy and
loss on the validation slice; the wall time is the method's own (:func:`qevo_lite.methods.choose_codes`).
One process, 2 threads, one seed per setting unless ``--seeds`` says more.

    python scripts/tune_peers.py --method adaround --bits 2 --grid "lr=1e-3,3e-3,1e-2,3e-2;reduction=sum_channels,mean"
    python scripts/tune_peers.py --task autoencoder --models ae --bits 3 --method brecq --grid "lr=1e-2,1e-1;fisher=False,True"
    python scripts/tune_peers.py --task detection --method es --grid "local.weighting=output,fisher"

prints a Markdown table (best first per model) and appends every row to ``--out`` (JSON lines), so a sweep can
be continued in stages (e.g. the regulariser weight at the best learning rate).
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from qevo_lite import evaluate, load_splits
from qevo_lite.core.data import Split
from qevo_lite.tasks.autoencoder.metrics import search_mse
from qevo_lite.tasks.detection.data import DetectionSplit
from qevo_lite.tasks.detection.metrics import evaluate_detector
from qevo_lite.methods import RoundingProblem, as_config, choose_codes, config_dict
from qevo_lite.tasks import context

VALIDATION = slice(1024, 2048)
DETECTION_VALIDATION = slice(192, 576)


def validation(ctx) -> tuple[Split, object]:
    """``(validation split, score)`` of the task: ``score(model) -> {metric key: value, "loss": value}``. The
    slice :data:`VALIDATION` of the task's held-back pool, checked to start with the profile's search split."""
    p = ctx.profile
    if ctx.task.name == "autoencoder":
        pool = ctx.task.load_splits(p.with_overrides(search_size=VALIDATION.stop)).search
        score = lambda model: {"mse": (m := search_mse(model, val)), "loss": m}  # noqa: E731
    elif ctx.task.name == "detection":
        pool = ctx.task.load_splits(p.with_overrides(search_size=DETECTION_VALIDATION.stop)).search
        score = lambda model: evaluate_detector(model, val)  # noqa: E731
    else:
        pool = load_splits(p.data.dataset, search_size=VALIDATION.stop, seed=p.data.split_seed).search
        score = lambda model: evaluate(model, val)  # noqa: E731
    assert torch.equal(pool.x[:len(ctx.search)], ctx.search.x), "the pool must start with the profile's search split"
    part = DETECTION_VALIDATION if ctx.task.name == "detection" else VALIDATION
    assert part.start >= len(ctx.search), "the validation slice must not overlap the search split"
    val = Split(pool.x[part], pool.y[part])
    if ctx.task.name == "detection":   # mAP is computed against the box lists
        val = DetectionSplit(val.x, val.y, pool.targets[part])
    return val, score


def with_changes(config, changes: dict):
    """``config`` with ``changes`` applied; a key ``part.field`` changes a field of a nested config (e.g.
    ``local.weighting`` of the ES's :class:`~qevo_lite.es.pipeline.EvolutionConfig`)."""
    flat = {k: v for k, v in changes.items() if "." not in k}
    nested: dict[str, dict] = {}
    for k, v in changes.items():
        if "." in k:
            part, name = k.split(".", 1)
            nested.setdefault(part, {})[name] = v
    return replace(config, **flat, **{part: replace(getattr(config, part), **v) for part, v in nested.items()})


def parse_grid(text: str) -> list[dict]:
    """``"lr=1e-3,1e-2;reduction=mean"`` -> every combination as ``{field: value}`` (numbers parsed)."""
    axes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, values = part.split("=", 1)
        axes.append([(key.strip(), _value(v.strip())) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def _value(text: str):
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="adaround", help="a registered method (default: adaround)")
    ap.add_argument("--task", default="classification", choices=("classification", "autoencoder", "detection"))
    ap.add_argument("--models", default="vgg,resnet", help="model labels of the task's fast profile (autoencoder: ae)")
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--grid", default="", help='settings to try, e.g. "lr=1e-3,1e-2;reduction=sum_channels,mean"')
    ap.add_argument("--seeds", default="0", help="comma-separated seeds per setting")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/tuning.jsonl", help="JSON lines file the rows are appended to")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ctx = context(args.task, "fast", device="cpu")
    _, score = validation(ctx)
    seeds = [int(s) for s in args.seeds.split(",")]
    p, head = ctx.profile, ctx.task.metrics[0]
    base = p.methods.es if args.method == "es" else as_config(args.method)   # the ES: the profile's own config
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for label in args.models.split(","):
        arch = p.grid.models[label]
        fmodel, _ = ctx.model(arch)
        rtn = ctx.rtn(arch, args.bits)["state"]
        print(f"\n{arch} W{args.bits}: RTN validation {head.label} {head.fmt(score(rtn.to_model(fmodel))[head.key])}")
        print(f"| model | {args.method} settings | validation {head.label} | validation loss | seconds |")
        print("|---|---|---|---|---|")
        rows = []
        for changes in parse_grid(args.grid):
            config = with_changes(base, changes)
            values, losses, secs = [], [], []
            for s in seeds:
                t0 = time.perf_counter()
                res = choose_codes(config, RoundingProblem(fmodel, rtn, ctx.search, seed=s, loss=ctx.task.es_loss,
                                                           metric=ctx.task.es_metric))
                secs.append(time.perf_counter() - t0)
                numbers = score(res.state.to_model(fmodel))
                values.append(numbers[head.key])
                losses.append(numbers["loss"])
            row = {"task": args.task, "arch": arch, "bits": args.bits, "config": config_dict(config),
                   "changes": changes, "seeds": seeds, f"validation_{head.key}": statistics.fmean(values),
                   "validation_loss": statistics.fmean(losses),
                   "seconds": statistics.fmean(secs), "threads": args.threads}
            rows.append(row)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"| {arch} | {changes or 'defaults'} | {head.fmt(row[f'validation_{head.key}'])} | "
                  f"{row['validation_loss']:.4f} | {row['seconds']:.1f} |", flush=True)
        best = max(rows, key=lambda r: head.improvement(r[f"validation_{head.key}"], 0.0))
        print(f"best on the validation slice: {best['changes'] or 'defaults'} "
              f"({head.fmt(best[f'validation_{head.key}'])})")


if __name__ == "__main__":
    main()
