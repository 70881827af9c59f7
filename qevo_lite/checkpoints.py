"""The checkpoint registry: small pretrained models under ``data/checkpoints`` with a manifest.

``manifest.json`` holds one entry per checkpoint (``<arch>-<dataset>``): the file, the
architecture and dataset, the split seed and search size it was trained against, the
epochs, the command that made it, its FP32 held-out accuracy and its sha256.
Loading verifies the sha256 and uses ``torch.load(..., weights_only=True)``; a missing
or mismatching file is retrained (with a message) rather than silently trusted.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .data import Splits, default_root, load_splits
from .evaluate import default_device, evaluate
from .models import build_model
from .train import train_classifier

# Training recipes of the committed checkpoints (epochs chosen to train in ~2 minutes on 2 CPU cores).
RECIPES = {
    ("vgg_small", "fashion_mnist"): {"epochs": 3, "lr": 3e-3},
    ("resnet_small", "fashion_mnist"): {"epochs": 2, "lr": 3e-3},
    ("vgg_small", "digits"): {"epochs": 30, "lr": 3e-3},
    ("resnet_small", "digits"): {"epochs": 30, "lr": 3e-3},
    ("vgg11", "cifar10"): {"epochs": 30, "lr": 2e-3},
    ("resnet20", "cifar10"): {"epochs": 30, "lr": 2e-3},
}
DEFAULT_RECIPE = {"epochs": 3, "lr": 3e-3}

# Models that are not classifiers live in their own task module, which provides
#   build_model(arch, entry) -> nn.Module               a fresh model shaped as the manifest entry says
#   train_model(arch, dataset, seed, epochs, device, progress) -> (model in eval mode on the CPU, fields)
# where ``fields`` are the manifest fields besides file/arch/dataset/seed/split_seed/command/sha256
# (e.g. ``epochs``, ``lr``, the data shape and the held-out FP32 metric).
TASK_MODULES = {
    "det_vgg_small": "qevo_lite.detection",
    "det_resnet_small": "qevo_lite.detection",
    "conv_autoencoder": "qevo_lite.autoencoder",
}


def _task_module(arch: str):
    """The task module of a non-classifier architecture, or None for the classifiers."""
    return importlib.import_module(TASK_MODULES[arch]) if arch in TASK_MODULES else None


def checkpoint_dir() -> Path:
    """``$QEVO_CHECKPOINTS`` if set, else ``<data root>/checkpoints``."""
    return Path(os.environ.get("QEVO_CHECKPOINTS", default_root() / "checkpoints"))


def checkpoint_file_name(key: str) -> str:
    """The file name of checkpoint ``key`` (``<arch>-<dataset>``): characters a file name cannot hold
    (the ``:`` and ``/`` of ``folder:<path>`` datasets) become ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key) + ".pt"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory: Path | None = None) -> dict:
    path = (directory or checkpoint_dir()) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def atomic_write(path: Path, write) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file in the same folder, which then
    replaces ``path`` (an interrupted write never leaves a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def train_checkpoint(arch: str, dataset: str = "fashion_mnist", seed: int = 0, epochs: int | None = None,
                     splits: Splits | None = None, directory: Path | None = None,
                     progress: bool = True, device=None) -> tuple[nn.Module, dict]:
    """Train ``arch`` on ``dataset``'s train split, save it and its manifest entry; return (model, entry).

    Classifiers use :data:`RECIPES`; detectors and the autoencoder are trained by their task module
    (:data:`TASK_MODULES`). Training runs on ``device`` (default: the GPU when there is one); the model
    is returned on the CPU."""
    directory = Path(directory or checkpoint_dir())
    device = device or default_device()
    task = _task_module(arch)
    if task is not None:
        model, fields = task.train_model(arch, dataset, seed=seed, epochs=epochs, device=device, progress=progress)
    else:
        recipe = dict(RECIPES.get((arch, dataset), DEFAULT_RECIPE))
        if epochs is not None:
            recipe["epochs"] = epochs
        splits = splits or load_splits(dataset, seed=seed)
        torch.manual_seed(seed)
        model = build_model(arch, splits.in_channels, splits.num_classes)
        train_classifier(model, splits.train, epochs=recipe["epochs"], lr=recipe["lr"], seed=seed,
                         progress=progress, device=device)
        model.eval()
        fields = {"in_channels": splits.in_channels, "num_classes": splits.num_classes,
                  "epochs": recipe["epochs"], "lr": recipe["lr"],
                  "fp32_test_accuracy": round(evaluate(model, splits.test)["accuracy"], 4)}
    model.cpu()
    key = f"{arch}-{dataset}"
    file = directory / checkpoint_file_name(key)
    atomic_write(file, lambda tmp: torch.save(model.state_dict(), tmp))
    entry = {"file": file.name, "arch": arch, "dataset": dataset, "seed": seed, "split_seed": seed,
             "command": f"qevo train --model {arch} --dataset {dataset} --seed {seed} --epochs {fields['epochs']}",
             **fields, "sha256": sha256_of(file)}
    manifest = read_manifest(directory)
    manifest[key] = entry
    atomic_write(directory / "manifest.json",
                  lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n"))
    return model, entry


def load_pretrained(arch: str = "vgg_small", dataset: str = "fashion_mnist", directory: Path | None = None,
                    train_if_missing: bool = True, splits: Splits | None = None) -> tuple[nn.Module, dict]:
    """The pretrained ``arch`` for ``dataset`` in eval mode, with its manifest entry.

    Verifies the file's sha256 against the manifest. When the file is missing or does
    not match, it is retrained (``train_if_missing``, with a printed message) or a
    ``FileNotFoundError`` / ``ValueError`` says which command makes it.
    """
    directory = Path(directory or checkpoint_dir())
    key = f"{arch}-{dataset}"
    entry = read_manifest(directory).get(key)
    file = directory / (entry["file"] if entry else checkpoint_file_name(key))
    problem = None
    if entry is None or not file.exists():
        problem = f"no checkpoint {file.name} in {directory}"
    elif sha256_of(file) != entry["sha256"]:
        problem = f"{file.name} does not match the sha256 in its manifest"
    if problem is None:
        task = _task_module(arch)
        model = (task.build_model(arch, entry) if task is not None
                 else build_model(arch, entry["in_channels"], entry["num_classes"]))
        model.load_state_dict(torch.load(file, weights_only=True, map_location="cpu"))
        return model.eval(), entry
    command = f"qevo train --model {arch} --dataset {dataset}"
    if not train_if_missing:
        raise FileNotFoundError(f"{problem}; make it with `{command}`.")
    print(f"{problem}: training it now (same as `{command}`).")
    return train_checkpoint(arch, dataset, splits=splits, directory=directory)
