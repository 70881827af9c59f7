"""The cell grid of one task (not the quantization grid, :mod:`qevo_lite.quant.grid`): every (architecture, bit
width, seed) cell, resumable, with one output folder.

:func:`run_task` runs a task's grid headless and writes into its folder ``out``:

* ``results.json``: every number; rewritten atomically after each cell, so a second call reuses the
  cells already there with the same settings, and an interrupted cell resumes from its ES checkpoints
  in ``out/checkpoints``;
* ``codes/<task>-<arch>-W<bits>-seed<seed>.pt``: the evolved codes of every cell (a reused cell whose
  codes are gone is run again, since the figures need them);
* ``results.md`` (the task's section: how the numbers were made, the table, the checks) and the figures.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..core.io import jsonable, read_json, save_torch, write_json, write_text
from ..methods import get_method
from .cell import cell_stem, run_cell
from .context import Context
from .parallel import CellPool
from .figures import write_figures
from .summary import checks, peer_targets, results_markdown, summarize_cells
from .time_left import TimeLeft, cell_steps, peer_seconds

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


def load_results(out: str | Path) -> dict:
    """The ``results.json`` of an earlier run in folder ``out`` ({} when there is none; a corrupt file
    raises ValueError naming it)."""
    path = Path(out) / RESULTS_JSON
    return read_json(path, "results of an earlier run",
                     "Move it away (or pass another --out) to start afresh, or repair it to resume.")


def cell_key(task: str, arch: str, bits: int, seed: int) -> str:
    """The key of a cell in ``results.json`` and in :func:`run_grid`'s ``cells``."""
    return f"{task}/{arch}/W{bits}/seed{seed}"


def codes_file(out: str | Path, task: str, arch: str, bits: int, seed: int) -> Path:
    """Where :func:`run_task` keeps the evolved codes of a cell."""
    return Path(out) / "codes" / f"{cell_stem(task, arch, bits, seed)}.pt"


def load_codes(out: str | Path, task: str, arch: str, bits: int, seed: int) -> dict:
    """The evolved codes ``{layer: int16 tensor}`` of a cell of an earlier run in ``out``."""
    return torch.load(codes_file(out, task, arch, bits, seed), weights_only=True)


def run_cells(jobs, out_json: Path | None = None, header: dict | None = None, progress: bool = True,
              desc: str = "cells", start=None, time_left: TimeLeft | None = None) -> tuple[dict, int]:
    """Run a resumable list of cells. ``jobs``: ``[(key, settings, run)]`` where ``run()`` returns the
    cell's dict (which holds ``"settings": settings``).

    With ``out_json``, the cells already there with equal settings are reused, and the file (``header``
    plus ``"cells"``, keeping cells of other keys) is rewritten atomically after each new cell, so an
    interrupted grid resumes at the cell it was in. ``start``: called once with the keys that will run, in
    order, before the first ``run()`` (a parallel grid submits them there). ``time_left``: the bar counts its
    reference seconds and estimates the time left (:mod:`~qevo_lite.experiment.time_left`; the jobs report their
    steps to it) instead of counting cells. Returns ``({key: cell} for the jobs, reused count)``.
    """
    from tqdm.auto import tqdm
    previous = load_results(out_json.parent) if out_json is not None else {}
    cells = dict(previous.get("cells", {}))
    settings_json = {key: jsonable(settings) for key, settings, _ in jobs}
    done = {key for key, _, _ in jobs if key in cells and cells[key].get("settings") == settings_json[key]}
    to_run = [key for key, _, _ in jobs if key not in done]
    if time_left is not None:
        time_left.open(len(to_run), desc, disable=not progress)
        bar = time_left
    else:
        bar = tqdm(total=len(jobs), initial=len(done), desc=desc, unit="cell", disable=not progress)
    if start is not None:
        start(to_run)
    try:
        for key, settings, run in jobs:
            if key in done:
                continue
            bar.set_postfix_str(key)
            cells[key] = jsonable(run())
            if out_json is not None:
                write_json(out_json, {**(header or {}), "cells": cells})
            if time_left is not None:
                time_left.cell_done()
            else:
                bar.update(1)
    finally:
        bar.close()
    return {key: cells[key] for key, _, _ in jobs}, len(done)


def _cell_job(ctx: Context, arch: str, bits: int, seed: int, out: Path | None, pool: CellPool | None = None):
    """A job for :func:`run_cells`: run the cell (here, or collect it from ``pool``'s workers), keep its codes in
    ``ctx.es_codes`` and ``out/codes``."""
    def run():
        if pool is not None:
            cell, codes = pool.result(arch, bits, seed)
        else:
            result, codes = run_cell(ctx, arch, bits, seed,
                                     checkpoint_dir=None if out is None else out / "checkpoints")
            cell = result.to_json()
        if codes is not None:
            ctx.es_codes[(arch, bits, seed)] = codes
            if out is not None:
                save_torch(codes, codes_file(out, ctx.task.name, arch, bits, seed))
        return cell
    return run


def run_grid(ctx: Context, out: str | Path | None = None, archs=None, progress: bool = True,
             workers: int | None = None) -> dict:
    """Every (arch, bits, seed) cell of ``ctx``'s profile (``archs``: a subset of its architectures),
    plus the task's extra studies. Returns ``{"profile", "cells", "summary", "checks", ...}``; with
    ``out``, resumable through ``out/results.json`` (see the module docstring). ``workers`` (2 or more): the
    cells run on that many Ray workers (:mod:`~qevo_lite.experiment.parallel`), the task's extra studies here."""
    p, task = ctx.profile, ctx.task
    archs = list(archs) if archs is not None else p.archs()
    out = Path(out) if out is not None else None
    header = {"version": 3, "task": task.name, "profile": jsonable(p.as_dict())}
    previous = load_results(out).get("cells", {}) if out is not None else {}
    pool = CellPool(ctx, workers) if workers and workers > 1 else None
    coords = {}
    jobs = []
    for arch in archs:
        for b in p.grid.bits:
            for s in p.grid.seeds:
                key, settings = cell_key(task.name, arch, b, s), ctx.settings(arch)
                if out is not None and previous.get(key, {}).get("es_run") and \
                        not codes_file(out, task.name, arch, b, s).exists():
                    settings = {**settings, "rerun": "its ES codes are missing"}  # the figures need them
                coords[key] = (arch, b, s)
                jobs.append((key, settings, _cell_job(ctx, arch, b, s, out, pool)))
    t0 = time.perf_counter()
    start = None if pool is None else (
        lambda keys: pool.submit([coords[k] for k in keys], None if out is None else out / "checkpoints"))
    # the time left, estimated from the task's reference step times (serial runs: Ray workers report no steps)
    time_left = None
    if task.step_seconds and pool is None:
        seconds = peer_seconds(task.step_seconds, p.methods.peers, task.tuned_peers)
        time_left = TimeLeft(seconds, cell_steps(tuple(get_method(c).name for c in p.methods.peers),
                                                 p.methods.es_from_peers))
        ctx.on_step = time_left.step
    try:
        cells, reused = run_cells(jobs, None if out is None else out / RESULTS_JSON, header, progress,
                                  desc=task.name, start=start, time_left=time_left)
    finally:
        ctx.on_step = None
        if pool is not None:
            pool.close()
    for (arch, b, s) in [(a, b, s) for a in archs for b in p.grid.bits for s in p.grid.seeds]:
        if (arch, b, s) not in ctx.es_codes and out is not None and codes_file(out, task.name, arch, b, s).exists():
            ctx.es_codes[(arch, b, s)] = load_codes(out, task.name, arch, b, s)
    results = {**header, "cells": cells, "summary": summarize_cells(cells, task), "search_images": len(ctx.search),
               "test_images": len(ctx.test), "cells_reused": reused}
    results["checks"] = checks(results["summary"], task)
    results["peer_targets"] = peer_targets(results["summary"], task)
    results.update(task.extra(ctx, results, out, progress))
    results["seconds_this_run"] = time.perf_counter() - t0
    return jsonable(results)


def run_task(ctx: Context, out: str | Path, archs=None, progress: bool = True, figures: bool = True,
             workers: int | None = None) -> dict:
    """:func:`run_grid` into folder ``out`` (on ``workers`` Ray workers when 2 or more), then the figures,
    ``results.md`` and the final ``results.json`` (which keeps every finished cell, also those of other
    settings)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_grid(ctx, out, archs, progress, workers)
    results["figures"] = write_figures(ctx, results, out) if figures else []
    every = {**load_results(out).get("cells", {}), **results["cells"]}
    write_json(out / RESULTS_JSON, {**results, "cells": every})
    write_text(out / RESULTS_MD, results_markdown(results, ctx.task))
    return results
