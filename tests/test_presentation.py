"""The task-generic printouts of the notebooks (qevo_lite.experiment.presentation) on a stand-in context: they read
each task's own metrics, the profile's rule for where the ES runs, and the cells' moved-weight statistics."""
from types import SimpleNamespace

import pytest

from qevo_lite.experiment import presentation as pres
from qevo_lite.experiment.cell_grid import cell_key
from qevo_lite.tasks import autoencoder, detection


class StandInContext:
    """What the printouts read of a :class:`~qevo_lite.experiment.context.Context`: a task, the profile's bits,
    FP32 and RTN numbers (RTN's MSE doubles with each bit removed), and the profile's rule for the ES."""

    def __init__(self, task, bits=(2, 4, 8)):
        self.task = task
        self.profile = SimpleNamespace(grid=SimpleNamespace(bits=bits))
        self.calls = []

    def fp32(self, arch):
        return {s: {"loss": 1.0, "mse": 0.1, "psnr": 20.0, "auroc": 0.9} for s in ("search", "test")}

    def rtn(self, arch, bits, granularity="per_channel"):
        self.calls.append((arch, bits, granularity))
        mse = 0.1 * (1 + 2.0 ** (8 - bits) / 100) * (1.5 if granularity == "per_tensor" else 1.0)
        numbers = {"loss": mse * 10, "mse": mse, "psnr": 10.0, "auroc": 0.5}
        return {"rule": "mse_search", "search": dict(numbers), "test": dict(numbers)}

    def rtn_search_cost(self, arch, bits):
        return self.task.search_cost(self.fp32(arch)["search"], self.rtn(arch, bits)["search"])

    def es_skip_reason(self, arch, bits):
        return "close to FP32" if bits == 8 else None


def test_rtn_rows_and_table_use_the_tasks_metrics(capsys):
    ctx = StandInContext(autoencoder.TASK)
    rows = pres.rtn_rows(ctx, "ae")
    assert [(r["bits"], r["granularity"]) for r in rows] == [(b, g) for b in (2, 4, 8)
                                                             for g in ("per_channel", "per_tensor")]
    assert pres.rtn_value(rows, 2, "mse") == pytest.approx(0.1 * 1.64)
    assert pres.rtn_value(rows, 2, "mse", "per_tensor") == pytest.approx(1.5 * 0.1 * 1.64)
    pres.print_rtn_table(ctx, rows)
    out = capsys.readouterr().out
    assert "FP32 mse 0.100 auroc 0.900 psnr 20.000" in out          # every metric of the autoencoder task
    assert "per-channel rule" in out and "per-tensor rule" in out
    assert pres.rtn_rows(ctx, "ae", bits=(3,), granularities=("per_channel",))[0]["bits"] == 3


def test_where_the_es_runs_follows_the_context_rule(capsys):
    where = pres.print_where_es_runs(StandInContext(autoencoder.TASK), "ae")
    assert where == {2: None, 4: None, 8: "close to FP32"}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "W2: RTN's search mse    64.0 % above FP32 -> ES runs"
    assert lines[2].endswith("-> ES does not run (close to FP32)")


def _cells(task, arch, bits, seeds, shares):
    cells = {}
    for s, share in zip(seeds, shares):
        per_layer = {"conv": {"moved": 100 * share, "share": share, "weights": 100, "sensitivity": 0.5},
                     "fc": {"moved": 0.0, "share": 0.0, "weights": 900, "sensitivity": 0.1}}
        moved = {k: share for k in pres.MOVED_KEYS}
        cells[cell_key(task.name, arch, bits, s)] = {"task": task.name, "arch": arch, "bits": bits, "seed": s,
                                                     "es_run": True, "moved": {**moved, "per_layer": per_layer}}
    return cells


def test_moved_means_average_over_the_seeds(capsys):
    cells = _cells(detection.TASK, "det", 3, (0, 1), (0.02, 0.04))
    means = pres.moved_means(cells, detection.TASK, "det", 3)
    assert means["share"] == pytest.approx(0.03) and means["seeds"] == 2
    assert means["per_layer"]["conv"]["moved"] == pytest.approx(3.0) and means["per_layer"]["fc"]["weights"] == 900
    pres.print_moved(means, "det", 3)
    out = capsys.readouterr().out
    assert "det W3, seed means over 2 seeds: moved 0.0300" in out and "3.0 of    100 moved ( 3.00%)" in out
    with pytest.raises(ValueError, match="did not run on det at W2"):
        pres.moved_means(cells, detection.TASK, "det", 2)


def test_held_out_summary_prints_every_metric_and_a_dash_without_es(capsys):
    keys = [m.key for m in detection.TASK.metrics]
    row = {"arch": "det", "bits": 3, "es_run": True,
           **{f"{p}_test_{k}": v for p, v in (("fp32", 0.6), ("rtn", 0.5), ("es", 0.55)) for k in keys}}
    pres.print_held_out([row, {**row, "bits": 8, "es_run": False}], detection.TASK, seeds=3)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "held-out test (ES: mean of 3 seeds): map, map50"
    assert lines[1] == "det W3:  FP32 0.6000 0.6000  RTN 0.5000 0.5000  ES 0.5500 0.5500"
    assert lines[2].endswith("ES -")


def test_search_cost_reads_the_headline_metric_or_else_the_loss():
    ctx = StandInContext(autoencoder.TASK)
    m = ctx.task.metrics[0]
    fp32, rtn = ctx.fp32("ae")["search"], ctx.rtn("ae", 2)["search"]
    assert ctx.rtn_search_cost("ae", 2) == (m.key, m.cost(rtn[m.key], fp32[m.key]))
    without = {k: v for k, v in rtn.items() if k != m.key}      # a search split that does not measure it
    assert ctx.task.search_cost(fp32, without) == ("loss", m.cost(rtn["loss"], fp32["loss"]))
