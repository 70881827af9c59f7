"""Nearest rounding (RTN) as a rounding method: the codes it is given, unchanged.

The RTN state itself (scale rule chosen on the search split) is made by :func:`qevo_lite.quant.rtn.best_rtn`
before any method runs; as a method, RTN is the baseline every table and figure starts from."""
from __future__ import annotations

from dataclasses import dataclass

from .problem import RoundingProblem


@dataclass(frozen=True)
class RTNConfig:
    """Nearest rounding has no settings."""

    def describe(self, samples: str) -> str:
        return "RTN (every weight on its nearest grid point)"


def round_nearest(problem: RoundingProblem, config: RTNConfig):
    """``(state, None)``: the problem's start state (RTN's codes unless told otherwise)."""
    return problem.start_state, None
