"""An estimate of the time left in a grid of cells, for ``qevo reproduce``'s progress bar.

A cell is a sequence of steps: its baseline (FP32 and RTN), the ES, each rounding peer and, where the profile
asks for it, the ES started from each peer's codes (``es_from:<peer>``). Their costs differ by more than ten
times (AdaRound against GPTQ), so counting cells or steps says little about the time left while the demo's
three cells run. Each task instead gives every step its seconds in a reference run (:attr:`Task.step_seconds`:
the demo from a clean clone on an idle 2-core AMD EPYC without AVX-512, 2026-12-06). The bar counts those
reference seconds, and the rate at which this machine gets through them so far scales the rest: time left =
reference seconds left x (real seconds so far / reference seconds done). Steps a cell skips (where RTN does not
hurt, no ES and no peer runs) count as done when the cell ends.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..methods import get_method


def cell_steps(peers: tuple[str, ...], es_from_peers: bool) -> tuple[str, ...]:
    """The steps of one cell, in the order it runs them: ``("baseline", "es", *peers, "es_from:<peer>"...)``
    (the ES from a peer's codes right after that peer)."""
    steps = ["baseline", "es"]
    for peer in peers:
        steps += [peer] + ([f"es_from:{peer}"] if es_from_peers else [])
    return tuple(steps)


def peer_seconds(step_seconds: dict, peers, tuned_peers) -> dict:
    """``step_seconds`` with each peer of ``peers`` (method configs) that runs a number of ``steps`` other than
    the task's tuned setting's (``tuned_peers``, what the reference run ran) scaled to its steps: a peer's time
    grows with its Adam steps."""
    out = dict(step_seconds)
    tuned = {get_method(c).name: c for c in tuned_peers}
    for config in peers:
        name = get_method(config).name
        steps, ref_steps = getattr(config, "steps", None), getattr(tuned.get(name), "steps", None)
        if name in out and steps and ref_steps and steps != ref_steps:
            out[name] = out[name] * steps / ref_steps
    return out


@dataclass
class TimeLeft:
    """A progress bar over reference seconds (see the module docstring). ``seconds``: ``{step: reference
    seconds}`` (an ``es_from:<peer>`` step costs what ``es`` does unless it has its own entry); ``steps``: the
    steps of one cell (:func:`cell_steps`). Call :meth:`open` with the number of cells to run, :meth:`step` after
    each step, :meth:`cell_done` after each cell, :meth:`close` at the end."""
    seconds: dict
    steps: tuple
    _bar: object = field(default=None, repr=False)
    _in_cell: float = 0.0

    def weight(self, step: str) -> float:
        """The reference seconds of ``step`` (0 for a step the reference run did not have)."""
        if step in self.seconds:
            return float(self.seconds[step])
        return float(self.seconds.get("es", 0.0)) if step.startswith("es_from:") else 0.0

    @property
    def cell_seconds(self) -> float:
        """Reference seconds of one whole cell."""
        return sum(self.weight(s) for s in self.steps)

    def open(self, cells: int, desc: str, disable: bool = False):
        """Start the bar for ``cells`` cells; returns it (a tqdm)."""
        from tqdm.auto import tqdm
        self._bar = tqdm(total=round(cells * self.cell_seconds, 1), desc=desc, disable=disable, smoothing=0,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} so far, about {remaining} left "
                                    "(estimated){postfix}")
        self._in_cell = 0.0
        return self._bar

    def step(self, name: str) -> None:
        """``name`` finished: move the bar by its reference seconds."""
        if self._bar is not None:
            w = min(self.weight(name), max(0.0, self.cell_seconds - self._in_cell))
            self._in_cell += w
            self._bar.update(w)

    def cell_done(self) -> None:
        """A cell finished: count the steps it skipped as done."""
        if self._bar is not None:
            self._bar.update(max(0.0, self.cell_seconds - self._in_cell))
        self._in_cell = 0.0

    def set_postfix_str(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
