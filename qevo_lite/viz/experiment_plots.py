"""Rounding methods' held-out metric against wall time, from :class:`MethodPoint` objects (no experiment keys:
the experiment layer turns its results into points, :func:`qevo_lite.experiment.records.method_points` and
:func:`qevo_lite.experiment.curves.curve_points`).

A ``metric`` is anything with ``label``, ``scale`` and ``higher_is_better`` (a
:class:`qevo_lite.experiment.task.Metric`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .style import finish, new_axes


@dataclass(frozen=True)
class MethodPoint:
    """One rounding method, at one budget, on a plot of held-out metric against wall time.

    Attributes:
        label: the method's name on the plot (the curve's legend entry in :func:`plot_budget_curves`).
        seconds: wall time from the RTN state (s; a seed mean for a point over seeds).
        value: the held-out metric in its own unit (e.g. accuracy 0.905; a seed mean).
        std: its seed std, or None (one seed: no error bar).
        kind: ``rtn``, ``peer`` or ``es`` (the colour in :func:`plot_methods_vs_time`).
        budget: the budget as text (``"1,000"``; budget curves label each point with it), or None.
        unit: what the budget counts (``"Adam steps per layer"``; in the curve's legend), or None.
        seeds: how many seeds ``value`` averages.
    """

    label: str
    seconds: float
    value: float
    std: float | None = None
    kind: str = "peer"
    budget: str | None = None
    unit: str | None = None
    seeds: int = 1


def plot_methods_vs_time(points: list[MethodPoint], metric, title: str, ax=None, path=None):
    """Held-out ``metric`` against wall time (log scale) for rounding methods, one :class:`MethodPoint` each
    (colour by its ``kind``), with the Pareto front (the methods no other method beats in both). A lower-is-better
    metric whose values span more than 5x (an error that rounding multiplies) gets a log scale, so that the
    methods near the best stay apart."""
    fig, ax = new_axes(ax, figsize=(7.2, 4.4))
    colours = {"rtn": "tab:blue", "peer": "tab:green", "es": "tab:red"}
    s, better = metric.scale, (1 if getattr(metric, "higher_is_better", True) else -1)
    ys = [s * p.value for p in points]
    log_y = better < 0 and min(ys) > 0 and max(ys) / min(ys) > 5
    xys = [(max(p.seconds, 0.1), y) for p, y in zip(points, ys)]
    for p, xy in zip(points, xys):
        ax.errorbar(*xy, yerr=None if p.std is None else s * p.std,
                    fmt="o", color=colours.get(p.kind, "tab:gray"), capsize=3)
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    for p, xy, offset in zip(points, xys, _label_offsets(ax, xys, [p.label for p in points])):
        moved = offset[1] != 4.0      # a label moved off its usual place gets a thin line to its point
        ax.annotate(p.label, xy, textcoords="offset points", xytext=offset, fontsize=8,
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="gray", shrinkA=0, shrinkB=3) if moved else None)
    front, best = [], None
    for p in sorted(points, key=lambda p: (p.seconds, -better * p.value)):
        if best is None or better * p.value > better * best:
            front.append(p)
            best = p.value
    ax.step([max(p.seconds, 0.1) for p in front], [s * p.value for p in front], where="post",
            color="black", alpha=0.35, lw=1, label="Pareto front")
    ax.set_xlabel("wall time from the RTN state (s, log scale)")
    ax.set_ylabel(f"held-out {metric.label}{' (log scale)' if log_y else ''}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right" if better > 0 else "upper right")
    return finish(fig, ax, title, path)


def _label_offsets(ax, xys: list, labels: list[str]) -> list[tuple[float, float]]:
    """Offsets (points) of each label from its data point ``xys``: right of and above it, else the nearest line
    below or above (alternating) where its box (about 4.6 points per character, 9 high, at font size 8) overlaps
    no label placed before it and stays inside the axes, so that labels of points close together stay readable
    (:func:`plot_methods_vs_time` joins a moved label to its point with a thin line)."""
    ax.autoscale_view()
    per_pixel = 72 / ax.figure.dpi
    bottom, top = ax.transAxes.transform([(0, 0), (1, 1)])[:, 1] * per_pixel
    boxes, out = [], [(5.0, 4.0)] * len(labels)
    where = ax.transData.transform(xys) * per_pixel
    for i in sorted(range(len(labels)), key=lambda i: -where[i][1]):     # top first: upper labels go up
        (x, y), label = where[i], labels[i]
        left, w, h = x + 5, 4.6 * len(label), 9.0
        free = lambda dy: bottom <= y + dy and y + dy + h <= top and not any(  # noqa: E731
            left < bl + bw and bl < left + w and y + dy < bb + h and bb < y + dy + h for bl, bb, bw in boxes)
        tries = [4.0] + [sign * 10.0 * i + (4.0 if sign > 0 else 0.0) for i in range(1, 12) for sign in (-1, 1)]
        dy = next((d for d in tries if free(d)), 4.0)
        boxes.append((left, y + dy, w))
        out[i] = (5.0, dy)
    return out


def plot_budget_curves(points: list[MethodPoint], metric, fp32: float | None, title: str, ax=None, path=None):
    """Each method as a curve over its budgets: held-out ``metric`` against wall time (log scale), one line per
    method (the points' ``label``) through its budgets in order, seed std as error bars, each point labelled
    with its ``budget``, the ``unit`` in the legend, FP32 as a dashed line. A method's points come in budget
    order. Labels of neighbouring methods alternate below and above their points so that curves which meet
    stay readable."""
    fig, ax = new_axes(ax, figsize=(7.6, 4.8))
    s = metric.scale
    if fp32 is not None:
        ax.axhline(s * fp32, color="black", ls="--", lw=1.2, label=f"FP32 ({s * fp32:.{getattr(metric, 'digits', 1)}f})")
    for i, method in enumerate(dict.fromkeys(p.label for p in points)):
        mine = [p for p in points if p.label == method]
        xs, ys = [max(p.seconds, 0.1) for p in mine], [s * p.value for p in mine]
        unit = mine[0].unit
        line = ax.errorbar(xs, ys, yerr=[s * (p.std or 0.0) for p in mine], fmt="o-", capsize=3,
                           label=f"{method} ({unit})" if unit else method)
        for p, x, y in zip(mine, xs, ys):
            ax.annotate(p.budget, (x, y), textcoords="offset points", xytext=(4, -11 if i % 2 == 0 else 5),
                        fontsize=7, color=line[0].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("wall time from the RTN state (s, log scale)")
    ax.set_ylabel(f"held-out {metric.label}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return finish(fig, ax, title, path)
