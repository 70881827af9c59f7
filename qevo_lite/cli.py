"""The ``qevo`` command: headless training, demos, benchmarks and reproductions."""
from __future__ import annotations

import argparse
import sys


def _threads(n: int | None) -> None:
    import os
    import torch
    torch.set_num_threads(n or os.cpu_count() or 1)


def cmd_train(args) -> int:
    from .checkpoints import TASK_MODULES, train_checkpoint
    from .data import load_splits
    splits = None if args.model in TASK_MODULES else load_splits(args.dataset, seed=args.seed, download=args.download)
    _, entry = train_checkpoint(args.model, args.dataset, seed=args.seed, epochs=args.epochs, splits=splits,
                                directory=args.out)
    metrics = ", ".join(f"{k.removeprefix('fp32_').replace('_', ' ')} {v:.4f}" for k, v in entry.items()
                        if k.startswith("fp32_"))
    print(f"{args.model} on {args.dataset}: FP32 {metrics}, sha256 {entry['sha256'][:12]}..., "
          f"written to {entry['file']}")
    return 0


def cmd_demo(args) -> int:
    """Nearest rounding of the pretrained models at several bit widths: a table and a figure."""
    import json
    from pathlib import Path
    from .baseline import rtn_table
    from .checkpoints import load_pretrained
    from .data import load_splits
    from .evaluate import evaluate
    from .fold import fold_batchnorm
    from .plots import plot_accuracy_vs_bits
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(args.dataset, search_size=args.search_size)
    test = splits.test.subset(args.test_size) if args.test_size else splits.test
    bits = [int(b) for b in args.bits.split(",")]
    everything = {}
    for arch in args.models.split(","):
        model, entry = load_pretrained(arch, args.dataset, splits=splits)
        fmodel = fold_batchnorm(model)
        rows = rtn_table(fmodel, splits.search, test, bits_list=bits)
        fp32 = evaluate(fmodel, test)["accuracy"]  # on the same test images as the table
        everything[arch] = {"fp32_test_accuracy": fp32, "rows": rows}
        print(f"\n{arch} on {args.dataset}: FP32 test accuracy {fp32:.3f} "
              f"(test images: {len(test)}; * = scale rule chosen on the search split)")
        print(f"{'bits':>4} {'granularity':<12} " + " ".join(f"{r:>14}" for r in ("maxabs_full", "maxabs_narrow", "mse")))
        for g in ("per_channel", "per_tensor"):
            for b in bits:
                cells = [r for r in rows if r["bits"] == b and r["granularity"] == g]
                print(f"{b:>4} {g:<12} " + " ".join(f"{r['test_accuracy']:>13.3f}{'*' if r['chosen'] else ' '}"
                                                  for r in cells))
        plot_accuracy_vs_bits(rows, fp32_accuracy=fp32, title=f"{arch}: nearest rounding, held-out accuracy",
                              path=out / f"rtn_{arch}.png")
    (out / "rtn.json").write_text(json.dumps(everything, indent=2))
    print(f"\nwrote {out}/rtn.json and the figures rtn_<model>.png")
    return 0


def cmd_bench(args) -> int:
    """Evaluations per second: naive vs fast evaluator (one process, same load)."""
    from .bench import bench_model, format_bench
    results = [bench_model(arch, bits=args.bits, generations=args.generations, lam=args.lam,
                           search_size=args.search_size) for arch in args.models.split(",")]
    print(format_bench(results))
    ok = all(r["same_fitness_values"] and r["same_trajectory"] for r in results)
    return 0 if ok else 1


def _int_list(text: str | None):
    return None if text is None else tuple(int(v) for v in text.split(",") if v.strip())


def cmd_reproduce(args) -> int:
    """The experiments headless: results.json, results.md and figures in --out."""
    from pathlib import Path
    from .experiments import EXPERIMENTS, get_profile, reproduce
    names = [e.strip() for e in args.experiment.split(",")]
    experiments = list(EXPERIMENTS) if "all" in names else names
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"Unknown experiment(s) {unknown}; choose from {sorted(EXPERIMENTS)} or 'all'.")
    overrides = dict(bits=_int_list(args.bits), seeds=_int_list(args.seeds), budget=args.budget,
                     search_size=args.search_size, test_size=args.test_size,
                     local_evaluations=args.local_budget, train_epochs=args.epochs,
                     min_drop=None if args.min_drop is None else args.min_drop / 100)
    profile = get_profile(args.profile, dataset=args.dataset, **overrides)
    if "all" in names:
        experiments = [e for e in experiments if EXPERIMENTS[e] != "classification" or e in profile.models]
    if args.dataset and any(EXPERIMENTS[e] != "classification" for e in experiments):
        print(f"note: --dataset {args.dataset} applies to the classification experiments only")
    out = Path(args.out or f"results/reproduce-{profile.name}")
    print(f"qevo reproduce: {', '.join(experiments)}, profile {profile.name!r} -> {out}")
    if any(EXPERIMENTS[e] == "classification" for e in experiments):
        print(f"classification: dataset {profile.dataset}, bits {list(profile.bits)}, seeds {list(profile.seeds)}, "
              f"budget {profile.budget} global + {profile.local_evaluations} local evaluations per layer")
    try:
        results = reproduce(experiments, profile, out, progress=not args.no_progress, device=args.device,
                            checkpoint_dir=args.checkpoints, download=args.download, dataset=args.dataset,
                            **overrides)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cells are in {out}/results.json (and <experiment>/results.json) and the "
              f"running cell's ES checkpoints in its checkpoints/ folder; run the same command again to resume.",
              file=sys.stderr)
        return 130
    print()
    print((out / "results.md").read_text())
    if "cells_reused" in results:
        print(f"classification: {results['cells_reused']} cells reused from an earlier run; "
              f"{results['seconds_this_run']:.0f} s for the cells run now.")
    print(f"wrote {out}/results.json, {out}/results.md and {len(results['figures'])} figures"
          + (" (each other experiment's JSON in its own folder)" if results.get("tasks") else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qevo", description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model and write its checkpoint + manifest entry")
    p.add_argument("--model", default="vgg_small")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--out", default=None, help="checkpoint directory (default data/checkpoints)")
    p.add_argument("--download", action="store_true", help="allow downloading the dataset")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="nearest rounding at several bit widths: table + figure")
    p.add_argument("--models", default="vgg_small,resnet_small")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--bits", default="2,3,4,6,8")
    p.add_argument("--search-size", type=int, default=2048)
    p.add_argument("--test-size", type=int, default=None, help="cap on test images (default: all)")
    p.add_argument("--out", default="results/demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="evaluations/s of the naive vs the fast evaluator, and their equivalence")
    p.add_argument("--models", default="vgg_small,resnet_small")
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--generations", type=int, default=25)
    p.add_argument("--lam", type=int, default=8)
    p.add_argument("--search-size", type=int, default=2048)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("reproduce", help="the experiments headless: JSON, Markdown tables, figures")
    p.add_argument("--experiment", default="all",
                   help="vgg, resnet, detection, autoencoder, a comma-separated list, or all (default)")
    p.add_argument("--profile", default=None, choices=("fast", "full"),
                   help="fast (default, or $QEVO_PROFILE): Fashion-MNIST, small models, CPU minutes; "
                        "full: CIFAR-10, VGG-11/ResNet-20, GPU recommended")
    p.add_argument("--bits", default=None, help="comma-separated bit widths (default: the profile's)")
    p.add_argument("--seeds", default=None, help="comma-separated ES seeds (default: the profile's)")
    p.add_argument("--budget", type=int, default=None, help="global-stage ES evaluations per cell")
    p.add_argument("--local-budget", type=int, default=None, help="local-stage ES evaluations per layer")
    p.add_argument("--dataset", default=None,
                   help="override the profile's dataset, e.g. folder:<path> (ImageFolder train/ and test/)")
    p.add_argument("--search-size", type=int, default=None, help="search-split images")
    p.add_argument("--test-size", type=int, default=None, help="cap on held-out test images")
    p.add_argument("--epochs", type=int, default=None, help="epochs when a missing checkpoint is trained")
    p.add_argument("--min-drop", type=float, default=None,
                   help="run the ES only where RTN's search accuracy is at least this many points below FP32 "
                        "(default: the profile's, 0.5; a negative value runs it at every bit width)")
    p.add_argument("--checkpoints", default=None,
                   help="pretrained-checkpoint directory (default data/checkpoints; <out>/pretrained for folder:)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--download", action="store_true", help="allow downloading the dataset")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", default=None, help="output folder (default results/reproduce-<profile>)")
    p.set_defaults(func=cmd_reproduce)

    args = parser.parse_args(argv)
    _threads(args.threads)
    try:
        return args.func(args)
    except Exception as exc:  # clear one-line errors for known problems
        from .data import DatasetUnavailable
        if isinstance(exc, (DatasetUnavailable, ValueError, FileNotFoundError)):
            print(f"qevo: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
