"""Pretrained models of any task: load from the checkpoint registry, or train and register them.

The task supplies ``build_model`` and ``train_model`` (:class:`~qevo_lite.experiment.task.Task`);
:mod:`qevo_lite.core.registry` checks and stores the files.
"""
from __future__ import annotations

from pathlib import Path

from ..core.evaluate import default_device
from ..core.registry import CheckpointMissing, load_checkpoint, save_checkpoint


def train_checkpoint(task, arch: str, dataset: str, seed: int = 0, epochs: int | None = None,
                     directory: Path | None = None, progress: bool = True, device=None, splits=None):
    """Train ``arch`` with ``task``'s recipe, save it and its manifest entry; return ``(model, entry)``.

    Training runs on ``device`` (default: the GPU when there is one); the model is returned on the CPU."""
    model, fields = task.train_model(arch, dataset, seed=seed, epochs=epochs, device=device or default_device(),
                                     progress=progress, splits=splits)
    entry = save_checkpoint(model, arch, dataset, seed, fields, directory)
    return model.cpu().eval(), entry


def load_pretrained(task, arch: str, dataset: str, directory: Path | None = None, train_if_missing: bool = True,
                    epochs: int | None = None, seed: int = 0, splits=None, progress: bool = True):
    """``(model in eval mode, manifest entry)`` of ``arch`` on ``dataset``, its sha256 verified.

    A missing or mismatching checkpoint is trained (``epochs`` None: the recipe's) with a printed
    message, or (``train_if_missing=False``) raises :class:`~qevo_lite.core.registry.CheckpointMissing`
    naming the command that makes it. ``seed``: the split seed a retrained model uses."""
    try:
        return load_checkpoint(arch, dataset, lambda entry: task.build_model(arch, entry), directory)
    except CheckpointMissing as exc:
        command = f"qevo train --model {arch} --dataset {dataset}"
        if not train_if_missing:
            raise CheckpointMissing(f"{exc}; make it with `{command}`.") from None
        print(f"{exc}: training it now (same as `{command}`" + (f" --epochs {epochs}`)." if epochs else "`)."))
        return train_checkpoint(task, arch, dataset, seed=seed, epochs=epochs, directory=directory, splits=splits,
                                progress=progress)
