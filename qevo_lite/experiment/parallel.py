"""The cell grid on several workers with Ray: the same cells and numbers as the serial run, one results.json.

Each worker is a Ray actor that holds its own :class:`~qevo_lite.experiment.context.Context` (the data, the models
and the RTN baselines, loaded once per worker) and runs whole cells (:func:`~qevo_lite.experiment.cell.run_cell`).
The driver submits every cell that is not reused from an earlier run, then collects them in grid order and writes
``results.json``, the codes and the figures exactly as the serial run does (:mod:`~qevo_lite.experiment.cell_grid`).

The pool starts a local Ray with ``workers`` CPUs, or joins the cluster ``RAY_ADDRESS`` names (not tested here; its
nodes need the package and the data; a cell's ES checkpoints, for resuming inside a cell, are written where the worker runs, so
that resume needs a shared output folder). Each worker runs ``threads`` torch threads (default: the driver's threads
shared out, at least one). A cell's numbers depend on its thread count (the order of float sums in the convolutions),
so a grid matches a serial run with the same threads per cell (tested with one thread: equal to the last digit).
Workers run on the CPU; on one GPU, run the grid serially.
"""
from __future__ import annotations

import os

import torch

from ..core.io import jsonable
from .cell import run_cell
from .context import Context

INSTALL_HINT = 'qevo reproduce --workers needs Ray: pip install "qevo-lite[grid]" (or pip install ray).'


def _ray():
    try:
        import ray
        import ray.util
    except ImportError as e:  # pragma: no cover - the test environment has Ray
        raise ImportError(INSTALL_HINT) from e
    return ray


class CellWorker:
    """One worker's state: its own context of ``task`` and ``profile`` on the CPU, ``threads`` torch threads."""

    def __init__(self, task, profile, checkpoint_dir, download, threads: int):
        torch.set_num_threads(threads)
        self.ctx = Context(task, profile, device="cpu", checkpoint_dir=checkpoint_dir, download=download)

    def run(self, arch: str, bits: int, seed: int, checkpoint_dir) -> tuple[dict, dict | None]:
        """``(cell dict, evolved codes or None)`` of one cell."""
        cell, codes = run_cell(self.ctx, arch, bits, seed, checkpoint_dir=checkpoint_dir)
        return jsonable(cell.to_json()), codes


class CellPool:
    """``workers`` Ray actors running the cells of ``ctx``'s grid (``ray.util.ActorPool``: each cell goes to the
    next idle worker); :meth:`submit` queues cells, :meth:`result` waits for one, in submission order."""

    def __init__(self, ctx: Context, workers: int, threads: int | None = None):
        if workers < 2:
            raise ValueError(f"workers must be at least 2 for a parallel grid, got {workers}.")
        if ctx.device.type != "cpu":
            raise ValueError(f"Parallel workers run on the CPU; this context runs on {ctx.device}. "
                             "Run the grid serially on one GPU (no --workers).")
        self.ctx, self.workers = ctx, workers
        self.threads = threads or max(1, torch.get_num_threads() // workers)
        self.actors: list = []
        self.pool = None
        self.order: list = []

    def _start(self) -> None:
        """Start Ray (unless running) and the workers: only when there is a cell to run."""
        ray = _ray()
        if not ray.is_initialized():
            if os.environ.get("RAY_ADDRESS"):   # an existing cluster: it has its own CPU count
                ray.init(log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        actor = ray.remote(num_cpus=1)(CellWorker)
        c = self.ctx
        self.actors = [actor.remote(c.task, c.profile, c.checkpoint_dir, c.download, self.threads)
                       for _ in range(self.workers)]
        self.pool = ray.util.ActorPool(self.actors)

    def submit(self, cells, checkpoint_dir=None) -> None:
        """Queue ``cells`` (``[(arch, bits, seed)]``, in the order :meth:`result` will ask for them); each goes to
        the next idle worker."""
        if cells and self.pool is None:
            self._start()
        for cell in cells:
            self.order.append(cell)
            self.pool.submit(lambda a, c: a.run.remote(*c, checkpoint_dir), cell)

    def result(self, arch: str, bits: int, seed: int) -> tuple[dict, dict | None]:
        """The next submitted cell's ``(cell dict, codes)``, waiting for it (asked for in submission order)."""
        expected = self.order.pop(0)
        if expected != (arch, bits, seed):
            raise RuntimeError(f"cells must be collected in submission order: expected {expected}, "
                               f"asked for {(arch, bits, seed)}")
        return self.pool.get_next()

    def close(self) -> None:
        """Stop the workers (a Ray started here stays up for the next grid of this process)."""
        for a in self.actors:
            _ray().kill(a)
        self.actors, self.pool = [], None
