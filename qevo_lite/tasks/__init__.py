"""The task registry: every task of the experiment pipeline, and the pretrained models of each.

It sits above everything it lists. Adding a task = a new subpackage with a
:class:`~qevo_lite.experiment.task.Task` subclass and one line in :data:`TASKS`.

It is also the experiment notebooks' (03-06) one face to the pipeline: besides :func:`context`, it re-exports
the grid runner, the side-by-side run of the rounding methods, the table, the shared figures, the task-generic
printouts (:mod:`~qevo_lite.experiment.presentation`: RTN's table, where the ES runs, the moved weights, the
held-out summary) and the figure style (``new_figure``), so a notebook imports from here and its task's subpackage, not from the modules that define
them.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..experiment import pretrained
from ..experiment.cell_grid import cell_key, run_grid
from ..experiment.context import Context
from ..experiment.figures import plot_curves, plot_metric_vs_bits, plot_moved
from ..experiment.presentation import (moved_means, print_held_out, print_moved, print_rtn_table, print_where_es_runs,
                                       rtn_rows, rtn_value)
from ..experiment.profile import Profile
from ..experiment.side_by_side import (check_side_by_side, plot_side_by_side, print_side_by_side, run_side_by_side,
                                       side_by_side_markdown)
from ..experiment.summary import markdown_table
from ..viz.style import new_figure
from . import autoencoder, classification, detection

__all__ = ["TASKS", "EXPERIMENTS", "get_task", "task_of", "get_profile", "context", "load_pretrained",
           "cell_key", "run_grid", "markdown_table", "plot_curves", "plot_metric_vs_bits", "plot_moved",
           "run_side_by_side", "side_by_side_markdown", "print_side_by_side", "plot_side_by_side",
           "check_side_by_side", "new_figure", "rtn_rows", "rtn_value", "print_rtn_table", "print_where_es_runs",
           "moved_means", "print_moved", "print_held_out"]

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
