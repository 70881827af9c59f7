"""What every notebook does once the package is importable: CPU threads, the device, a clock.

A notebook's first code cell checks that ``qevo_lite`` is installed (and says how to install it in
Colab), then calls :func:`setup`; its last cells call :meth:`Session.check_solutions` (the teachers' check of
the reference solutions) and :meth:`Session.report_run_time`.
"""
from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .core.evaluate import default_device


@dataclass
class Session:
    """``device`` the notebook runs on, ``in_colab``, and ``t0`` (the clock at setup, seconds)."""

    device: torch.device
    in_colab: bool
    t0: float = field(default_factory=time.perf_counter)

    def report_run_time(self) -> float:
        """Print and return the seconds since :func:`setup`."""
        seconds = time.perf_counter() - self.t0
        print(f"notebook run time: {seconds:.0f} s")
        return seconds

    def check_solutions(self, notebook: str, checks: dict) -> None:
        """Run each exercise check on the reference solution of the same name, when ``solutions/<notebook>_solutions.py``
        is next to the notebook (or under ``notebooks/``, from the repository root); the folder is not shipped
        with the pip package, so elsewhere this only says it skipped.

        ``notebook``: the number, e.g. ``"03"``; ``checks``: ``{name defined by the solutions file: check
        function}``, run in that order (each prints its verdict, and raises if the solution is wrong)."""
        name = f"{notebook}_solutions.py"
        for candidate in (Path("solutions") / name, Path("notebooks/solutions") / name):
            if candidate.exists():
                solutions: dict = {}
                exec(candidate.read_text(), solutions)   # noqa: S102 - our own reference file
                for fn_name, check in checks.items():
                    check(solutions[fn_name])
                return
        print(f"solutions/{name} not found next to the notebook; skipped.")


def setup(threads: int = 2, needs: str = "the fast profile") -> Session:
    """Use ``threads`` torch CPU threads (the committed outputs were computed with that many: another
    count rounds float sums differently), pick the device, say whether a GPU is on, and quiet
    torchmetrics' warnings about optional backends. ``needs``: what the CPU is enough for, in the message."""
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=UserWarning, module="torchmetrics")
    in_colab = "google.colab" in sys.modules
    if in_colab:   # Colab renders ipywidgets only through its custom widget manager
        try:
            from google.colab import output
            output.enable_custom_widget_manager()
        except Exception:  # noqa: BLE001 - widgets then fall back to nothing worse than a text repr
            print("Colab's widget manager could not be enabled: set QEVO_STATIC_WIDGETS=1 for static figures.")
    device = default_device()
    if device.type == "cuda":
        print(f"GPU on: {torch.cuda.get_device_name(0)}")
    else:
        print(f"No GPU: running on the CPU, which is all {needs} needs.")
        if in_colab:
            print("(Runtime > Change runtime type > GPU for the `full` profile.)")
    return Session(device, in_colab)
