"""The checkpoint registry: small pretrained models shipped inside the package (``qevo_lite/checkpoints``, so
a ``pip install`` from git brings them) with a manifest.

``manifest.json`` holds one entry per checkpoint (``<arch>-<dataset>``): the file, the
architecture and dataset, the split seed it was trained against, the epochs, the command that
made it, its FP32 held-out numbers and its sha256. Loading verifies the sha256 and uses
``torch.load(..., weights_only=True)``.

This module knows files, not models: :func:`load_checkpoint` takes a ``build(entry)`` function
that makes the empty model, and :func:`save_checkpoint` the trained model and its manifest
fields. Which task builds and trains which architecture is the task registry's business
(:mod:`qevo_lite.tasks`, whose ``load_pretrained`` / ``train_checkpoint`` use these two).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from .io import atomic_write, read_json, write_text

PACKAGE_CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


class CheckpointMissing(FileNotFoundError):
    """A checkpoint is not in the registry or its file does not match its manifest sha256."""


def checkpoint_dir() -> Path:
    """``$QEVO_CHECKPOINTS`` if set, else the package's own ``qevo_lite/checkpoints`` (package data)."""
    return Path(os.environ.get("QEVO_CHECKPOINTS", PACKAGE_CHECKPOINTS))


def checkpoint_key(arch: str, dataset: str) -> str:
    """The manifest key of ``arch`` trained on ``dataset``."""
    return f"{arch}-{dataset}"


def checkpoint_file_name(key: str) -> str:
    """The file name of checkpoint ``key`` (``<arch>-<dataset>``): characters a file name cannot hold
    (the ``:`` and ``/`` of ``folder:<path>`` datasets) become ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key) + ".pt"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory: Path | None = None) -> dict:
    """The manifest of ``directory`` (default :func:`checkpoint_dir`): ``{key: entry}``, {} if absent.

    A corrupt manifest raises ValueError naming the file and how to recover it."""
    path = Path(directory or checkpoint_dir()) / "manifest.json"
    return read_json(path, "the checkpoint manifest",
                     "Restore it with `git checkout -- qevo_lite/checkpoints/manifest.json` (the committed models), "
                     "or delete it and retrain with `qevo train --model <arch>`.")


def save_checkpoint(model: nn.Module, arch: str, dataset: str, seed: int, fields: dict,
                    directory: Path | None = None) -> dict:
    """Save ``model``'s weights as ``<arch>-<dataset>.pt`` in ``directory`` and add its manifest entry
    (``fields``: the recipe, data shape and FP32 held-out numbers; ``fields["epochs"]`` goes into the
    command that remakes it). Returns the entry."""
    directory = Path(directory or checkpoint_dir())
    key = checkpoint_key(arch, dataset)
    file = directory / checkpoint_file_name(key)
    model.cpu()
    atomic_write(file, lambda tmp: torch.save(model.state_dict(), tmp))
    entry = {"file": file.name, "arch": arch, "dataset": dataset, "seed": seed, "split_seed": seed,
             "command": f"qevo train --model {arch} --dataset {dataset} --seed {seed} --epochs {fields['epochs']}",
             **fields, "sha256": sha256_of(file)}
    manifest = read_manifest(directory)
    manifest[key] = entry
    write_text(directory / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return entry


def load_checkpoint(arch: str, dataset: str, build, directory: Path | None = None) -> tuple[nn.Module, dict]:
    """``(model in eval mode, manifest entry)`` of ``arch`` trained on ``dataset``.

    ``build(entry) -> nn.Module`` makes the empty model. Raises :class:`CheckpointMissing` (saying
    which command makes it) when the entry or file is missing or the file's sha256 does not match."""
    directory = Path(directory or checkpoint_dir())
    key = checkpoint_key(arch, dataset)
    entry = read_manifest(directory).get(key)
    file = directory / (entry["file"] if entry else checkpoint_file_name(key))
    if entry is None or not file.exists():
        raise CheckpointMissing(f"no checkpoint {file.name} in {directory}")
    if sha256_of(file) != entry["sha256"]:
        raise CheckpointMissing(f"{file.name} does not match the sha256 in its manifest")
    model = build(entry)
    model.load_state_dict(torch.load(file, weights_only=True, map_location="cpu"))
    return model.eval(), entry
