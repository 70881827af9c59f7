"""The ``qevo`` command: headless training, demos, benchmarks, reproductions, and quantizing a torchvision model."""
from __future__ import annotations

import argparse
import os
import sys


def _threads(n: int | None) -> None:
    import torch
    torch.set_num_threads(n or os.cpu_count() or 1)


def cmd_train(args) -> int:
    from .core.data import load_splits
    from .tasks import task_of, train_checkpoint
    classifier = task_of(args.model).name == "classification"   # an unknown model raises, listing every task's
    splits = load_splits(args.dataset, seed=args.seed, download=args.download) if classifier else None
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
    from .quant.rtn import rtn_table
    from .tasks import load_pretrained
    from .core.data import load_splits
    from .core.evaluate import evaluate
    from .quant.fold import fold_batchnorm
    from .viz.quant_plots import plot_rtn_vs_bits
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
        plot_rtn_vs_bits(rows, fp32_accuracy=fp32, title=f"{arch}: nearest rounding, held-out accuracy",
                              path=out / f"rtn_{arch}.png")
    (out / "rtn.json").write_text(json.dumps(everything, indent=2))
    print(f"\nwrote {out}/rtn.json and the figures rtn_<model>.png")
    return 0


def cmd_bench(args) -> int:
    """Evaluations per second: naive vs fast evaluator (one process, same load)."""
    from .bench import bench_local, bench_model, format_bench, format_bench_local
    archs, ok = args.models.split(","), True
    if args.only in (None, "local"):
        local = [bench_local(arch, bits=args.bits) for arch in archs]
        print("Local evaluators (one layer, identical candidate sets of 2 code moves):\n")
        print(format_bench_local(local))
        ok = all(d <= 1e-5 for r in local for d in r["max_rel_diff"].values())
    if args.only in (None, "global"):
        print("\nGlobal evaluators (the whole network on the search split):\n")
        results = [bench_model(arch, bits=args.bits, generations=args.generations, lam=args.lam,
                               search_size=args.search_size) for arch in archs]
        print(format_bench(results))
        ok = ok and all(r["same_fitness_values"] and r["same_trajectory"] for r in results)
    return 0 if ok else 1


def int_list(text: str) -> tuple:
    """argparse type: ``"2,3,4"`` -> ``(2, 3, 4)``, with a clear message for anything else."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 0,1,2; got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError("expected at least one whole number, e.g. 0,1,2")
    return values


def cmd_reproduce(args) -> int:
    """The experiments headless: results.json, results.md and figures per task in --out."""
    from pathlib import Path
    from .reproduce import plan, reproduce
    experiments = [e.strip() for e in args.experiment.split(",")]
    chosen = plan(experiments)
    overrides = dict(bits=args.bits, seeds=args.seeds, budget=args.budget, search_size=args.search_size,
                     test_size=args.test_size, local_budget=args.local_budget, train_epochs=args.epochs,
                     min_drop_points=args.min_drop, min_rise_percent=args.min_rise, granularity=args.granularity,
                     # RTN on the grids the methods do not use, beside them
                     extra_granularities=args.granularity and tuple(g for g in ("per_channel", "per_tensor")
                                                                    if g != args.granularity))
    if args.dataset and set(chosen) - {"classification"}:
        print(f"note: --dataset {args.dataset} applies to the classification experiments only")
    name = args.profile or os.environ.get("QEVO_PROFILE", "fast")
    out = Path(args.out or f"results/reproduce-{name}")
    print(f"qevo reproduce: {', '.join(chosen)}, profile {name!r} -> {out}")
    try:
        results = reproduce(experiments, name, out,
                            progress=not args.no_progress, device=args.device, checkpoint_dir=args.checkpoints,
                            download=args.download, dataset=args.dataset, workers=args.workers, **overrides)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cells are in {out}/<task>/results.json and the running cell's ES "
              f"checkpoints in its checkpoints/ folder; run the same command again to resume.", file=sys.stderr)
        return 130
    print()
    print((out / "results.md").read_text())
    for task, r in results.items():
        print(f"{task}: {r['cells_reused']} cells reused from an earlier run; {r['seconds_this_run']:.0f} s for the "
              f"cells run now; {len(r['figures'])} figures")
    print(f"wrote {out}/results.md and, per task, {out}/<task>/results.json, results.md and the figures")
    return 0


def cmd_quantize(args) -> int:
    """A torchvision model and an image folder through ``qv.quantize``; the report, and the model as ONNX."""
    from pathlib import Path
    import torch
    from .torchvision_models import batchnorm_statistics_from, image_folder, torchvision_model
    from .user_model import quantize
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix != ".onnx":
        raise ValueError(f"--out {out}: write an ONNX file (a path ending in .onnx).")
    weights = None if args.weights.lower() == "none" else args.weights
    model = torchvision_model(args.model, weights=weights)
    data = image_folder(args.data, args.resolution, limit=args.images)
    images = torch.stack([data[i][0] for i in range(len(data))])
    if weights is None:   # untrained: batch-norm statistics of these images, so activations have a trained scale
        batchnorm_statistics_from(model, images)
    if args.loss == "output_mse":   # inputs alone: the float model's own outputs are the targets
        data = images
    print(f"qevo quantize: {args.model} ({'untrained' if weights is None else weights + ' weights'}), "
          f"{len(data)} images of {args.data} at {args.resolution} px, W{args.bits}, {args.method}")
    _, report = quantize(model, data, bits=args.bits, method=args.method, loss=args.loss, samples=args.samples,
                         budget=args.budget, progress=not args.no_progress, onnx=out)
    print(report)
    return 0


def _add_quantize(sub) -> None:
    """The ``quantize`` sub-command: a torchvision model on an image folder."""
    p = sub.add_parser("quantize", help="quantize a torchvision model on an image folder; write it as ONNX")
    p.add_argument("--model", required=True, help="torchvision:<name>, e.g. torchvision:resnet18, "
                   "torchvision:mobilenet_v2, torchvision:retinanet_resnet50_fpn")
    p.add_argument("--weights", default="DEFAULT",
                   help="torchvision weights name (DEFAULT: the pretrained ones, downloaded once), or none")
    p.add_argument("--data", required=True, help="a folder of class sub-folders of images (ImageNet's val layout)")
    p.add_argument("--images", type=int, default=256, help="calibration images read from --data (default 256)")
    p.add_argument("--resolution", type=int, default=224, help="image side in pixels after the centre crop")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--method", default="es", help="a registered method: rtn, gptq, adaround, brecq, es")
    p.add_argument("--loss", default="output_mse", choices=("output_mse", "cross_entropy"),
                   help="output_mse (default): match the float model's outputs, no labels needed; "
                        "cross_entropy: the folder's class index as the label (right for ImageNet's 1,000 "
                        "synset folders, sorted)")
    p.add_argument("--samples", type=int, default=256, help="images the layer-wise methods fit")
    p.add_argument("--budget", type=int, default=0,
                   help="the ES's global-stage evaluations (default 0: the local stage alone; the paper's chain: 64)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default=None, help="write the quantized model here as ONNX with integer weights")
    p.set_defaults(func=cmd_quantize)


def _add_reproduce(sub) -> None:
    """The ``reproduce`` sub-command and its options."""
    p = sub.add_parser("reproduce", help="the experiments headless: JSON, Markdown tables, figures")
    p.add_argument("--experiment", default="all",
                   help="classification (or only vgg / resnet), detection, autoencoder, a comma-separated list, "
                        "or all (default)")
    p.add_argument("--profile", default=None, choices=("demo", "fast", "full"),
                   help="fast (default, or $QEVO_PROFILE): Fashion-MNIST, small models, every width and 3 seeds, "
                        "CPU minutes to an hour; demo: every method once at each task's headline width (one seed, "
                        "one model per task, the peers tuned), about 10 CPU minutes; "
                        "full: CIFAR-10, VGG-11/ResNet-20, GPU recommended")
    p.add_argument("--bits", type=int_list, default=None, help="comma-separated bit widths (default: the profile's)")
    p.add_argument("--seeds", type=int_list, default=None, help="comma-separated ES seeds (default: the profile's)")
    p.add_argument("--budget", type=int, default=None,
                   help="global-stage ES evaluations per cell (default: the profile's, 0: the local stage alone; "
                        "64 gives the paper's local-then-global chain)")
    p.add_argument("--local-budget", type=int, default=None,
                   help="local-stage budget per layer: generations of the quadratic local ES, evaluations "
                        "of the sampled one (0: no local stage)")
    p.add_argument("--dataset", default=None,
                   help="override the profile's dataset, e.g. folder:<path> (ImageFolder train/ and test/)")
    p.add_argument("--search-size", type=int, default=None, help="search-split images")
    p.add_argument("--test-size", type=int, default=None, help="cap on held-out test images")
    p.add_argument("--epochs", type=int, default=None, help="epochs when a missing checkpoint is trained")
    p.add_argument("--min-drop", type=float, default=None, metavar="POINTS",
                   help="classification and detection: run the ES only where RTN's search accuracy / mAP is at "
                        "least this many points below FP32 (default: the profile's; negative: at every bit width)")
    p.add_argument("--min-rise", type=float, default=None, metavar="PERCENT",
                   help="autoencoder: run the ES only where RTN raises the search MSE by at least this many "
                        "percent (default: the profile's, 2)")
    p.add_argument("--granularity", default=None, choices=("per_channel", "per_tensor"),
                   help="the grid every method chooses codes on (default: the profile's, per_channel); RTN on the "
                        "other grid is reported beside it")
    p.add_argument("--checkpoints", default=None,
                   help="pretrained-checkpoint directory (default qevo_lite/checkpoints; <out>/pretrained for folder:)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                   help="a missing dataset is downloaded when the machine is online; --download always tries "
                        "(errors shown), --no-download never does")
    p.add_argument("--workers", type=int, default=None,
                   help="run each task's cells on this many Ray workers (a local Ray, or the cluster $RAY_ADDRESS "
                        "names; needs pip install \"qevo-lite[grid]\"); each gets --threads / workers torch threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", default=None, help="output folder (default results/reproduce-<profile>)")
    p.set_defaults(func=cmd_reproduce)


def build_parser() -> argparse.ArgumentParser:
    """The ``qevo`` argument parser: one sub-command per job."""
    parser = argparse.ArgumentParser(prog="qevo", description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model and write its checkpoint + manifest entry")
    p.add_argument("--model", default="vgg_small",
                   help="any task's model: vgg_small, resnet_small, vgg11, resnet20 (classification), det_vgg_small, "
                        "det_resnet_small (detection), conv_autoencoder (autoencoder)")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--out", default=None, help="checkpoint directory (default qevo_lite/checkpoints)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                   help="a missing dataset is downloaded when the machine is online; --download always tries "
                        "(errors shown), --no-download never does")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="nearest rounding at several bit widths: table + figure")
    p.add_argument("--models", default="vgg_small,resnet_small")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--bits", default="2,3,4,6,8")
    p.add_argument("--search-size", type=int, default=2048)
    p.add_argument("--test-size", type=int, default=None, help="cap on test images (default: all)")
    p.add_argument("--out", default="results/demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="evaluations/s of the local evaluators (quadratic vs sparse vs dense) and of the naive vs "
                       "the fast global evaluator, and their equivalence")
    p.add_argument("--models", default="vgg_small,resnet_small")
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--generations", type=int, default=25)
    p.add_argument("--lam", type=int, default=8)
    p.add_argument("--search-size", type=int, default=2048)
    p.add_argument("--only", choices=("local", "global"), default=None, help="run one of the two benchmarks")
    p.set_defaults(func=cmd_bench)

    _add_reproduce(sub)
    _add_quantize(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _threads(args.threads)
    try:
        return args.func(args)
    except Exception as exc:  # clear one-line errors for known problems
        from .core.data import DatasetUnavailable
        if isinstance(exc, (DatasetUnavailable, ValueError, FileNotFoundError)):
            print(f"qevo: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
