"""The task registry: every task of the experiment pipeline, and the pretrained models of each.

It sits above everything it lists. Adding a task = a new subpackage with a
:class:`~qevo_lite.experiment.task.Task` subclass and one line in :data:`TASKS`.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..experiment import pretrained
from ..experiment.context import Context
from ..experiment.profile import Profile
from . import autoencoder, classification, detection

TASKS = {t.name: t for t in (classification.TASK, detection.TASK, autoencoder.TASK)}

# what ``qevo reproduce --experiment`` accepts: a task, or one model label of a task's profile
EXPERIMENTS = {"vgg": ("classification", "vgg"), "resnet": ("classification", "resnet"),
               **{name: (name, None) for name in TASKS}}


def get_task(name: str):
    """The task called ``name``."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; choose one of {sorted(TASKS)}.")
    return TASKS[name]


def task_of(arch: str):
    """The task that builds and trains architecture ``arch``."""
    for task in TASKS.values():
        if arch in task.architectures:
            return task
    known = {name: list(t.architectures) for name, t in TASKS.items()}
    raise ValueError(f"Unknown model {arch!r}. Models by task: {known}.")


def get_profile(task: str, name: str | None = None, **overrides) -> Profile:
    """Task ``task``'s profile ``name`` (default: ``$QEVO_PROFILE`` or ``fast``) with ``overrides``."""
    t = get_task(task)
    name = name or os.environ.get("QEVO_PROFILE", "fast")
    if name not in t.profiles:
        raise ValueError(f"Unknown profile {name!r}; choose one of {sorted(t.profiles)}.")
    return t.profiles[name].with_overrides(**overrides)


def context(task: str, profile: str | None = None, device=None, download: bool | None = None, **overrides):
    """The :class:`~qevo_lite.experiment.context.Context` of task ``task`` with its profile ``profile``
    (None values in ``overrides`` keep the profile's)."""
    return Context(get_task(task), get_profile(task, profile, **overrides), device=device, download=download)


def load_pretrained(arch: str = "vgg_small", dataset: str = "fashion_mnist", directory: Path | None = None,
                    train_if_missing: bool = True, splits=None, epochs: int | None = None):
    """The pretrained ``arch`` for ``dataset`` in eval mode, with its manifest entry (sha256 verified).

    A missing or mismatching file is retrained by its task (with a printed message), or with
    ``train_if_missing=False`` raises FileNotFoundError naming the command that makes it."""
    return pretrained.load_pretrained(task_of(arch), arch, dataset, directory, train_if_missing, epochs=epochs,
                                      splits=splits)


def train_checkpoint(arch: str, dataset: str = "fashion_mnist", seed: int = 0, epochs: int | None = None,
                     splits=None, directory: Path | None = None, progress: bool = True, device=None):
    """Train ``arch`` with its task's recipe, save it and its manifest entry; return ``(model, entry)``."""
    return pretrained.train_checkpoint(task_of(arch), arch, dataset, seed=seed, epochs=epochs, directory=directory,
                                       progress=progress, device=device, splits=splits)
