"""The typed view of a cell's or a summary row's numbers: one :class:`Outcome` per method that ran.

Cells and summary rows are stored as flat JSON-ready dicts (``results.json``, version 3, see the README) whose
number keys follow one scheme, ``<prefix>_<split>_<metric>`` (e.g. ``es_test_accuracy``,
``gptq_search_map``), with the seed std of a summary row as ``<key>_std``. This module is the one place that
writes (:func:`keyed`) and reads (:func:`outcomes`) that scheme; tables, figures and checks work on
:class:`Outcome` objects, and learn which peers ran from the row's ``peers`` list (registered method names,
:mod:`qevo_lite.methods`), never from key names.

Prefixes: ``fp32``; ``rtn`` (the profile's grid) and ``rtn_<grid>`` (its extra grids); ``es`` (the ES from
RTN); ``<peer>`` (a rounding peer, e.g. ``gptq``); ``es_<peer>`` (the ES started from that peer's codes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..methods import label_of
from ..viz.experiment_plots import MethodPoint

SPLITS = ("search", "test")


def keyed(prefix: str, numbers: dict, split: str) -> dict:
    """``{f"{prefix}_{split}_{metric}": value}`` for every metric of ``numbers`` (the writer of the scheme)."""
    return {f"{prefix}_{split}_{k}": v for k, v in numbers.items()}


@dataclass(frozen=True)
class Outcome:
    """One method's numbers in one cell or summary row.

    Attributes:
        prefix: the method's key prefix in the flat dict (``es``, ``gptq``, ``es_gptq``, ``rtn_per_tensor`` ...).
        label: how tables and figures name it (``ES from GPTQ``, ``RTN per-tensor (mse)``).
        kind: ``fp32``, ``rtn``, ``peer`` or ``es`` (colours and table layout follow it).
        search, test: metric key -> value on that split (the seed mean in a summary row).
        search_std, test_std: metric key -> seed std (summary rows; empty for a cell or a fixed number).
        seconds: wall time end to end from the RTN state (s; an ES from a peer's codes includes the peer's);
            0 for RTN, None for FP32.
        evaluations: the ES's ``"local + global"`` evaluations as table text, or None.
        moved: the share of codes moved, as table text (``"1.20%"``, ``"3.1% of GPTQ's"``), or None.
    """

    prefix: str
    label: str
    kind: str
    search: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    search_std: dict = field(default_factory=dict)
    test_std: dict = field(default_factory=dict)
    seconds: float | None = None
    evaluations: str | None = None
    moved: str | None = None

    def value(self, metric, split: str = "test"):
        """The value of ``metric`` (an object with ``key``, or the key itself) on ``split`` (None if absent)."""
        return getattr(self, split).get(getattr(metric, "key", metric))

    def std(self, metric, split: str = "test"):
        """The seed std of ``metric`` on ``split`` (None if absent)."""
        return getattr(self, f"{split}_std").get(getattr(metric, "key", metric))


def _numbers(row: dict, prefix: str) -> dict:
    """The ``search``/``test`` values and stds of ``prefix`` in ``row`` (no stds for a row of one seed)."""
    out = {}
    for split in SPLITS:
        start = f"{prefix}_{split}_"
        values, stds = {}, {}
        for k, v in row.items():
            if not k.startswith(start) or isinstance(v, (dict, list, str)) or v is None:
                continue
            metric = k[len(start):]
            if metric.endswith("_std"):
                stds[metric.removesuffix("_std")] = v
            else:
                values[metric] = v
        one_seed = len(row.get("seeds", ())) == 1   # a std of one seed says nothing: none is shown
        out[split], out[f"{split}_std"] = values, {} if one_seed else {k: v for k, v in stds.items() if k in values}
    return out


def extra_grids(row: dict) -> list[str]:
    """The extra RTN grids of ``row`` (e.g. ``["per_tensor"]``), in the row's order."""
    return [k.removeprefix("rtn_").removesuffix("_rule") for k in row
            if k.startswith("rtn_") and k.endswith("_rule") and k != "rtn_rule"]


def fp32_outcome(row: dict) -> Outcome:
    """FP32's numbers."""
    return Outcome("fp32", "FP32", "fp32", **_numbers(row, "fp32"))


def rtn_outcomes(row: dict) -> list[Outcome]:
    """RTN on each extra grid, then on the profile's grid (the baseline), labelled with grid and scale rule."""
    out = [Outcome(f"rtn_{g}", f"RTN {g.replace('_', '-')} ({row[f'rtn_{g}_rule']})", "rtn", seconds=0.0,
                   **_numbers(row, f"rtn_{g}")) for g in extra_grids(row)]
    grid = row.get("granularity") or row.get("settings", {}).get("granularity", "per_channel")
    out.append(Outcome("rtn", f"RTN {grid.replace('_', '-')} ({row['rtn_rule']})", "rtn", seconds=0.0,
                       **_numbers(row, "rtn")))
    return out


def method_outcomes(row: dict) -> list[Outcome]:
    """The ES from RTN, then each peer the row lists in ``peers`` followed by the ES from its codes (where it
    ran); empty where the ES did not run."""
    if not row.get("es_run"):
        return []
    local, glob = bool(row.get("local_method") or row.get("local_evaluations")), bool(row.get("global_evaluations"))
    second = row.get("second_stage", "global")     # "gradient" where the gradient stage ran (rows since 2026-12-06)
    stages = f"local + {second}" if local and glob else "local" if local else second
    out = [Outcome("es", f"ES from RTN ({stages})", "es", seconds=row["wall_seconds"],
                   evaluations=f"{row['local_evaluations']:.3g} + {row['global_evaluations']:.0f}",
                   moved=f"{100 * _moved_share(row):.2f}%", **_numbers(row, "es"))]
    for peer in row.get("peers", []):
        name = label_of(peer)
        out.append(Outcome(peer, name, "peer", seconds=row[f"{peer}_seconds"], **_numbers(row, peer)))
        if f"es_{peer}_seconds" not in row:   # the profile did not start the ES from this peer
            continue
        out.append(Outcome(f"es_{peer}", f"ES from {name}", "es",
                           seconds=row[f"{peer}_seconds"] + row[f"es_{peer}_seconds"],
                           moved=f"{100 * row[f'es_{peer}_moved_share']:.2f}% of {name}'s",
                           **_numbers(row, f"es_{peer}")))
    return out


def _moved_share(row: dict) -> float:
    """The ES's moved share: a summary row's seed mean, or a cell's own."""
    return row["moved_share"] if "moved_share" in row else row["moved"]["share"]


def local_value(row: dict, metric, split: str = "test"):
    """The held-out (or search) ``metric`` after the ES's local stage alone, where it was measured (else None)."""
    return row.get(f"local_{split}_{getattr(metric, 'key', metric)}")


def outcomes(row: dict) -> list[Outcome]:
    """Every method of ``row`` (a cell or a summary row): FP32, RTN on each grid, then :func:`method_outcomes`."""
    return [fp32_outcome(row)] + rtn_outcomes(row) + method_outcomes(row)


def outcome(row: dict, prefix: str) -> Outcome:
    """The outcome of ``row`` with key prefix ``prefix`` (``es``, ``gptq``, ...); KeyError naming those present."""
    found = {o.prefix: o for o in outcomes(row)}
    if prefix not in found:
        raise KeyError(f"No method {prefix!r} in this row; it has {list(found)}.")
    return found[prefix]


def method_points(row: dict, metric) -> list[MethodPoint]:
    """The points of :func:`~qevo_lite.viz.experiment_plots.plot_methods_vs_time` for one row with peers: RTN
    at 0 s, then every method of :func:`method_outcomes` (held-out seed means and stds)."""
    rtn = next(o for o in rtn_outcomes(row) if o.prefix == "rtn")
    seeds = len(row.get("seeds", ())) or 1
    pts = [MethodPoint("RTN", 0.0, rtn.value(metric), None, "rtn", seeds=seeds)]
    for o in method_outcomes(row):
        pts.append(MethodPoint("ES from RTN" if o.prefix == "es" else o.label, o.seconds, o.value(metric),
                               o.std(metric), o.kind, seeds=seeds))
    return pts
