"""What every notebook does once the package is importable: CPU threads, the device, a clock, the exercises' checks.

A notebook's first code cell checks that ``qevo_lite`` is installed (and says how to install it in
Colab), then calls :func:`setup`; its exercises (the questions of its graded assignment, copied in from
``grading/src`` by ``scripts/notebooks.py``) run their public checks inside :func:`exercise`; its last cell calls
:meth:`Session.report_run_time`.
"""
from __future__ import annotations

import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

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


@contextmanager
def exercise(question: str):
    """Run an exercise's public checks (the ``with`` block) and say whether they pass, without raising, so that
    a notebook with unfinished exercises still runs top to bottom: an unfinished or wrong answer prints what
    failed. ``question``: its name in the assignment, e.g. ``"q1_rtn_codes"``. A teacher's grader (``grading/``)
    runs further hidden tests on the same question."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - any failure of a check is the student's to see, not a crash
        detail = str(error).splitlines()[0][:200] if str(error) else ""
        print(f"{question}: not passing yet ({type(error).__name__}{': ' + detail if detail else ''})")
    else:
        print(f"{question}: passes its checks (a grader's hidden tests try more inputs)")
