"""``qevo reproduce``: every experiment of a profile, headless, through the one pipeline.

Each task writes into its own folder ``out/<task>/`` (``results.json``, ``results.md``, the figures,
the evolved codes; see :mod:`qevo_lite.experiment.cell_grid`), and ``out/results.md`` joins their sections.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from .core.io import write_text
from .experiment.context import Context
from .experiment.cell_grid import RESULTS_MD, run_task
from .tasks import EXPERIMENTS, get_profile, get_task


def plan(experiments) -> dict:
    """``{task name: model labels or None (all)}`` for experiment names (``all``, tasks, or model labels
    such as ``vgg``), in registry order."""
    names = list(experiments)
    if "all" in names:
        names = [n for n in EXPERIMENTS if EXPERIMENTS[n][1] is None]
    unknown = [e for e in names if e not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"Unknown experiment(s) {unknown}; choose from {sorted(EXPERIMENTS)} or 'all'.")
    chosen: dict = {}
    for e in names:
        task, label = EXPERIMENTS[e]
        if label is None:
            chosen[task] = None
        elif task not in chosen or chosen[task] is not None:
            chosen[task] = (chosen.get(task) or []) + [label]
    return chosen


def reproduce(experiments=("all",), profile: str | None = "fast", out: str | Path = "results/reproduce",
              progress: bool = True, device=None, checkpoint_dir=None, download: bool | None = None, figures: bool = True,
              workers: int | None = None, **overrides) -> dict:
    """Run experiments headless into ``out`` and resume from what it already holds. ``overrides`` are
    :class:`~qevo_lite.experiment.profile.Profile` fields, named as in its parts (``bits``, ``seeds``, ``dataset``, ...) or its ES budget
    knobs (``budget``, ``local_budget``) applied to every task (``dataset`` to classification only). A task that cannot run the profile
    (:meth:`~qevo_lite.experiment.task.Task.unavailable`, e.g. detection's full profile) raises ValueError
    when named, and is skipped with a warning under ``all``. ``workers`` (2 or more): each task's cells run on that
    many Ray workers (:mod:`qevo_lite.experiment.parallel`; same numbers as a serial run with the same threads per
    cell). Returns ``{task: results dict}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, sections = {}, []
    for name, labels in plan(experiments).items():
        task = get_task(name)
        task_overrides = {k: v for k, v in overrides.items() if k != "dataset" or name == "classification"}
        prof = get_profile(name, profile, **task_overrides)
        reason = task.unavailable(prof)
        if reason is not None:
            if "all" not in experiments:
                raise ValueError(reason)
            warnings.warn(f"skipping {name}: {reason}", stacklevel=2)
            sections.append(f"## {task.title} (profile `{prof.name}`)\n\nNot run: {reason}\n")
            continue
        ck_dir = checkpoint_dir
        if ck_dir is None and prof.data.dataset.startswith("folder:"):
            ck_dir = out / "pretrained"   # never register stand-in models in the package's registry
        ctx = Context(task, prof, device=device, checkpoint_dir=ck_dir, download=download)
        archs = prof.archs(labels)
        results[name] = run_task(ctx, out / name, archs=archs, progress=progress, figures=figures, workers=workers)
        # the task's relative links (its figures) now point into its folder; absolute and web links stay
        sections.append(re.sub(r"\]\((?!https?://|/)", f"]({name}/", (out / name / RESULTS_MD).read_text()))
    write_text(out / RESULTS_MD, "\n\n".join(sections))
    return results
