"""A cell's result, typed: what :func:`~qevo_lite.experiment.cell.run_cell` returns.

:meth:`CellResult.to_json` turns it into the flat dict of ``results.json`` (version 3, keys
``<prefix>_<split>_<metric>`` written by :func:`~qevo_lite.experiment.records.keyed`), only when the cell is
written; the tables and figures read that dict back through :mod:`~qevo_lite.experiment.records` (one
``Outcome`` per method). Every metric dict below maps a task metric's key to its value (e.g.
``{"loss": 0.31, "accuracy": 0.905}``); a ``Split`` is ``{"search": {...}, "test": {...}}``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .records import SPLITS, keyed


def _split_keys(prefix: str, numbers: dict) -> dict:
    """``numbers`` (a Split) as flat keys, search first."""
    out = {}
    for split in SPLITS:
        out.update(keyed(prefix, numbers[split], split))
    return out


@dataclass
class RTNRun:
    """Nearest rounding on one grid: the scale rule of lowest search loss (``rule``, e.g. ``"mse_search"``) and
    its numbers on both splits (a Split)."""

    rule: str
    numbers: dict


@dataclass
class ESRun:
    """Both stages of the ES from the RTN codes in one cell.

    Attributes:
        local_method: the local stage's kind (``"quadratic"``, ``"sampled"``) or None (no local stage).
        local_search_loss: the task's search loss after the local stage (the global stage's start; without a
            global stage, the default, the result's).
        local_evaluations: candidate evaluations of the local stage, all layers.
        local_seconds: the local stage's wall time (s), layer captures included.
        local_log: per layer ``{layer, before, after, evaluations}`` (its output error before and after).
        local_test: held-out numbers after the local stage (empty where no held-out report was made).
        numbers: the final search and held-out numbers (a Split).
        global_evaluations: the second stages' evaluations (the global stage's fitness evaluations plus the
            gradient stage's exact checks).
        global_seconds: the second stages' wall time (s), setup and curvature included.
        final_p: the global stage's final mutation rate.
        history: per generation ``{evaluations, best, mean, best_metric, complete, accepted}``.
        reports: the held-out reports at the reporting points (never used for selection).
        moved: where the weights moved (:func:`~qevo_lite.experiment.moved.moved_analysis`).
        second_stage: which second stages ran after the local one (``"global"``, ``"gradient"`` or both).
        local_kept: False where the ES's ``gate_local`` set the local stage's codes aside (they raised the search
            loss; the second stages then started from the start codes).
    """

    local_method: str | None
    local_search_loss: float
    local_evaluations: float
    local_seconds: float
    local_log: list
    local_test: dict
    numbers: dict
    global_evaluations: int
    global_seconds: float
    final_p: float
    history: list
    reports: list
    moved: dict
    second_stage: str = "global"
    local_kept: bool = True

    @property
    def evaluations(self) -> float:
        """Local and global evaluations together."""
        return self.local_evaluations + self.global_evaluations

    @property
    def wall_seconds(self) -> float:
        """Both stages' wall time from the RTN state (s)."""
        return self.local_seconds + self.global_seconds


@dataclass
class PeerRun:
    """A rounding peer in one cell, and the ES started from its codes where the profile asks for it.

    Attributes:
        name: the registered method's name (``"gptq"``); its flat keys use it as prefix.
        seconds: the peer's wall time from the RTN state (s).
        numbers: its search and held-out numbers (a Split).
        es_numbers: the ES from its codes (a Split), or None where that did not run.
        es_seconds: that ES's own wall time (s, without the peer's).
        es_moved_share: the share of all weights that ES moved away from the peer's codes.
        gain_over_peer: that ES's held-out headline-metric improvement over the peer (positive = better).
        es_local_kept: 1.0 if that ES kept its local stage's codes, 0.0 where its ``gate_local`` set them aside
            (they raised the search loss over the peer's; a float, so that seeds average to a share).
    """

    name: str
    seconds: float
    numbers: dict
    es_numbers: dict | None = None
    es_seconds: float | None = None
    es_moved_share: float | None = None
    gain_over_peer: float | None = None
    es_local_kept: float | None = None


@dataclass
class CellResult:
    """One (architecture, bit width, seed) cell of a task's grid.

    Attributes:
        task, arch, dataset, bits, seed: the cell's coordinates.
        settings: the profile's settings the cell depends on (a resumed run reuses a cell only where they are equal).
        search_images, test_images: the split sizes.
        num_weights: quantized weights of the model.
        fp32: the float model's numbers (a Split).
        rtn: nearest rounding on the profile's grid (the baseline and every method's start).
        extra_rtn: nearest rounding on each extra grid, by grid name (``"per_tensor"``).
        es: the ES's run, or None where it did not run (then ``es_skipped_reason`` says why).
        gains: ``gain_<metric>`` / ``search_gain_<metric>`` over RTN (positive = better) and ``gap_recovered``
            (the share of the RTN-to-FP32 gap of the headline metric recovered on the held-out split, or None).
        peers: the rounding peers in the profile's order, or None where they did not run (RTN did not hurt).
        head: the headline metric's key (names the ``gain_over_<peer>_<head>`` keys).
    """

    task: str
    arch: str
    dataset: str
    bits: int
    seed: int
    settings: dict
    search_images: int
    test_images: int
    num_weights: int
    fp32: dict
    rtn: RTNRun
    extra_rtn: dict = field(default_factory=dict)
    es: ESRun | None = None
    es_skipped_reason: str | None = None
    gains: dict = field(default_factory=dict)
    peers: list | None = None
    head: str = ""

    def to_json(self) -> dict:
        """The flat dict of ``results.json`` (version 3; key order as written since that version)."""
        out = {"task": self.task, "arch": self.arch, "dataset": self.dataset, "bits": self.bits, "seed": self.seed,
               "settings": self.settings, "search_images": self.search_images, "test_images": self.test_images,
               "num_weights": self.num_weights, "rtn_rule": self.rtn.rule}
        for split in SPLITS:
            out.update(keyed("fp32", self.fp32[split], split))
            out.update(keyed("rtn", self.rtn.numbers[split], split))
        for grid, r in self.extra_rtn.items():
            out[f"rtn_{grid}_rule"] = r.rule
            out.update(_split_keys(f"rtn_{grid}", r.numbers))
        if self.es is None:
            out.update(es_run=False, es_skipped_reason=self.es_skipped_reason)
            return out
        es = self.es
        out.update(es_run=True, local_method=es.local_method, local_search_loss=es.local_search_loss,
                   local_evaluations=es.local_evaluations, local_seconds=es.local_seconds, local_log=es.local_log)
        out.update(keyed("local", es.local_test, "test"))
        out.update(_split_keys("es", es.numbers))
        out.update(self.gains)
        out.update(global_evaluations=es.global_evaluations, evaluations=es.evaluations,
                   global_seconds=es.global_seconds, wall_seconds=es.wall_seconds, final_p=es.final_p,
                   history=es.history, reports=es.reports, moved=es.moved, second_stage=es.second_stage,
                   local_kept=es.local_kept)
        if self.peers is not None:
            out["peers"] = [p.name for p in self.peers]
            for p in self.peers:
                out[f"{p.name}_seconds"] = p.seconds
                out.update(_split_keys(p.name, p.numbers))
                if p.es_numbers is None:
                    continue
                prefix = f"es_{p.name}"
                out.update(_split_keys(prefix, p.es_numbers))
                out[f"{prefix}_seconds"] = p.es_seconds
                out[f"{prefix}_moved_share"] = p.es_moved_share
                out[f"{prefix}_local_kept"] = p.es_local_kept
                out[f"gain_over_{p.name}_{self.head}"] = p.gain_over_peer
        return out
