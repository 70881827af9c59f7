"""What every rounding method is given: one :class:`RoundingProblem`, whatever the method.

A method chooses codes on the grid of ``rtn_state`` (scales and zero points fixed) for the BN-folded float
model ``fmodel``, fitting ``search`` (never the test split), starting from ``start`` codes (default RTN's; the
ES can start from a peer's). The scoring fields (``loss``, ``metric``, ``report``) matter to methods that
score the whole network (the ES's global stage); the layer-wise peers only use the layers' inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..core.data import Split
from ..evaluators.base import Codes
from ..quant.grid import QuantState


@dataclass(frozen=True)
class RoundingProblem:
    """One call's inputs.

    Attributes:
        fmodel: the BN-folded float model (not modified).
        rtn_state: the nearest-rounding state whose grid every method keeps.
        search: the split the method fits (``search.x`` inputs; ``search.y`` the loss's targets).
        start: codes to start from ``{layer: int16 tensor}`` (None: RTN's).
        seed: the method's seed (its random draws; a deterministic method ignores it).
        loss, metric: per-sample loss and metric of the whole network (``"cross_entropy"``, ``"mse"`` or a
            callable ``(outputs, targets) -> (n,)``; metric None: none).
        report: ``model -> dict`` of held-out numbers at reporting points (never used to choose), or None.
        report_every: generations between reports.
        checkpoints: resume files of a method's stages (the ES: local, global), or None.
        threads: CPU threads for many tiny operations (the ES's local stage); None: unchanged.
        progress: show progress bars.
    """

    fmodel: nn.Module
    rtn_state: QuantState
    search: Split
    start: Codes | None = None
    seed: int = 0
    loss: Any = "cross_entropy"
    metric: Any = "default"
    report: Callable | None = None
    report_every: int = 1
    checkpoints: tuple[Path | None, Path | None] = field(default=(None, None))
    threads: int | None = 1
    progress: bool = False

    @property
    def start_state(self) -> QuantState:
        """The state the method starts from (``rtn_state`` with the ``start`` codes)."""
        return self.rtn_state if self.start is None else self.rtn_state.with_codes(self.start)

    def starting_from(self, codes: Codes | None, checkpoints: tuple = (None, None)) -> "RoundingProblem":
        """The same problem from other start codes (and resume files)."""
        return replace(self, start=codes, checkpoints=checkpoints)
