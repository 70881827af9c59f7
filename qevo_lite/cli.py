"""The ``qevo`` command: headless training, demos, benchmarks and reproductions."""
from __future__ import annotations

import argparse
import sys


def _threads(n: int | None) -> None:
    import os
    import torch
    torch.set_num_threads(n or os.cpu_count() or 1)


def cmd_train(args) -> int:
    from .checkpoints import train_checkpoint
    from .data import load_splits
    splits = load_splits(args.dataset, seed=args.seed, download=args.download)
    _, entry = train_checkpoint(args.model, args.dataset, seed=args.seed, epochs=args.epochs, splits=splits,
                                directory=args.out)
    print(f"{args.model} on {args.dataset}: FP32 test accuracy {entry['fp32_test_accuracy']:.4f}, "
          f"sha256 {entry['sha256'][:12]}..., written to {entry['file']}")
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
