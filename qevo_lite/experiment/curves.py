"""Budget curves: every method at several budgets, and the peers issue's target (i) read off the curves.

A *run* is one (method, budget, seed) from the RTN state: ``{method, budget_name, budget, seconds, test}``
(``test``: the task's held-out numbers, e.g. ``{"accuracy": 0.905}``; ``seconds``: the method's wall time).
A *point* is a (method, budget) over its seeds, a :class:`~qevo_lite.viz.experiment_plots.MethodPoint`
(``label``: the method's, ``budget`` as text, ``unit``, ``seconds``: mean, ``value``: mean of the headline
metric, ``std``: sample std, 0 for one seed, ``seeds``), as
:func:`qevo_lite.viz.experiment_plots.plot_budget_curves` draws them.

Target (i) on curves: at each peer budget the ES reaches the peer's held-out metric in at most half the peer's
wall time (the fastest ES point at least as good counts), and the ES's best point beats every peer's best point
by more than the larger of their seed stds.
"""
from __future__ import annotations

import statistics

from ..methods import get_method
from ..viz.experiment_plots import MethodPoint

_UNITS = {"samples": "calibration images", "steps": "Adam steps per layer", "images": "search images"}


def curve_points(runs: list[dict], head) -> list[MethodPoint]:
    """The runs grouped by (method, budget), in the order they first appear, as plot points (see module doc)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["budget"]), []).append(r)
    points = []
    for (name, budget), mine in groups.items():
        values = [r["test"][head.key] for r in mine]
        field = mine[0]["budget_name"]
        unit = "Adam steps per block" if (name, field) == ("brecq", "steps") else _UNITS.get(field, field)
        method = get_method(name)
        points.append(MethodPoint(method.label, statistics.fmean(r["seconds"] for r in mine), statistics.fmean(values),
                                  statistics.stdev(values) if len(values) > 1 else 0.0, method.kind,
                                  budget=f"{budget:,}", unit=unit, seeds=len(values)))
    return points


def curve_targets(points: list[MethodPoint], head, es_label: str = "ES") -> dict:
    """Target (i) read off ``points``: ``{"budgets": [...], "best": {...}}``.

    ``budgets``: one entry per peer point, ``{method, budget, value, seconds, es_budget, es_seconds,
    time_ratio, met}`` where ``es_*`` is the fastest ES point whose mean is at least the peer's (None when no ES
    point reaches it; ``met`` is then False) and ``met`` is ``time_ratio <= 0.5``.
    ``best``: ``{peer, peer_value, es_value, margin, std, met}``: the ES's best point against the best point of
    the best peer; ``margin`` is positive when the ES is better; ``met`` when ``margin > std`` (the larger of
    the two points' seed stds)."""
    es = [p for p in points if p.label == es_label]
    peers = [p for p in points if p.label != es_label]
    if not es or not peers:
        raise ValueError(f"need points of the ES ({es_label!r}) and of at least one peer, got "
                         f"{sorted({p.label for p in points})}")
    budgets = []
    for p in peers:
        reach = [e for e in es if head.improvement(e.value, p.value) >= 0]
        fastest = min(reach, key=lambda e: e.seconds, default=None)
        ratio = None if fastest is None else fastest.seconds / p.seconds
        es_budget = None if fastest is None else f"{fastest.budget} {fastest.unit or ''}".strip()
        budgets.append({"method": p.label, "budget": p.budget, "unit": p.unit, "value": p.value,
                        "seconds": p.seconds, "es_budget": es_budget,
                        "es_seconds": fastest and fastest.seconds, "time_ratio": ratio,
                        "met": ratio is not None and ratio <= 0.5})
    best = lambda pts: max(pts, key=lambda q: head.improvement(q.value, 0.0))
    es_best, peer_best = best(es), best(peers)
    margin = head.improvement(es_best.value, peer_best.value)
    std = max(es_best.std or 0.0, peer_best.std or 0.0)
    return {"budgets": budgets, "best": {"peer": peer_best.label, "peer_value": peer_best.value,
                                         "es_value": es_best.value, "margin": margin, "std": std,
                                         "met": margin > std}}


def curve_targets_markdown(targets: dict, head) -> list[str]:
    """:func:`curve_targets` as a Markdown table (one row per peer budget) and a line on the best points."""
    fmt = lambda v: f"{head.scale * v:.{head.digits}f}"
    lines = ["| peer | budget | held-out | wall s | fastest ES point at least as good | ES wall s | ES / peer time "
             "| met |", "|---|---|---|---|---|---|---|---|"]
    for b in targets["budgets"]:
        es = "none" if b["es_budget"] is None else b["es_budget"]
        es_s = "-" if b["es_seconds"] is None else f"{b['es_seconds']:.1f}"
        ratio = "-" if b["time_ratio"] is None else f"{100 * b['time_ratio']:.0f}%"
        lines.append(f"| {b['method']} | {b['budget']} {b['unit'] or ''} | {fmt(b['value'])} | {b['seconds']:.1f} "
                     f"| {es} | {es_s} | {ratio} | {'yes' if b['met'] else 'no'} |")
    t = targets["best"]
    lines += ["", f"Best points: ES {fmt(t['es_value'])} against {t['peer']} {fmt(t['peer_value'])}: margin "
              f"{head.scale * t['margin']:+.{head.digits + 1}f} against the larger seed std "
              f"{head.scale * t['std']:.{head.digits + 1}f}: {'met' if t['met'] else 'not met'}."]
    return lines
