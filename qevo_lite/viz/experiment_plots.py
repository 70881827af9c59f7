"""Figures of an experiment grid, any task: a metric against bit width, the ES's search curves with
held-out reports, and where the ES moved weights.

``rows`` are the summary rows and ``cells`` the cell dicts of :mod:`qevo_lite.experiment`; a
``metric`` is anything with ``key``, ``label`` and ``scale`` (a :class:`qevo_lite.experiment.task.Metric`).
"""
from __future__ import annotations

import statistics

from ..methods import label_of
from .style import finish, new_axes, new_figure


def plot_metric_vs_bits(rows: list[dict], arch: str, metric, ax=None, path=None):
    """Held-out ``metric`` against bit width for ``arch``: FP32 (dashed), RTN on each grid, the ES
    (mean ± std over seeds)."""
    rs = sorted([r for r in rows if r["arch"] == arch], key=lambda r: r["bits"])
    if not rs:
        raise ValueError(f"No rows for {arch!r}.")
    fig, ax = new_axes(ax)
    k, s = metric.key, metric.scale
    bits = [r["bits"] for r in rs]
    fp32 = s * rs[0][f"fp32_test_{k}"]
    ax.axhline(fp32, color="black", ls="--", lw=1.2, label=f"FP32 ({fp32:.{metric.digits}f})")
    for g in [x.removeprefix("rtn_").removesuffix("_rule") for x in rs[0] if x.startswith("rtn_") and
              x.endswith("_rule") and x != "rtn_rule"]:
        ax.plot(bits, [s * r[f"rtn_{g}_test_{k}"] for r in rs], "s:", color="tab:gray", label=f"RTN {g}")
    ax.plot(bits, [s * r[f"rtn_test_{k}"] for r in rs], "o-", color="tab:blue", label="RTN")
    es = [r for r in rs if r["es_run"]]
    if es:
        ax.errorbar([r["bits"] for r in es], [s * r[f"es_test_{k}"] for r in es],
                    yerr=[s * r[f"es_test_{k}_std"] for r in es], fmt="D-", color="tab:red", capsize=4,
                    label=f"ES (mean ± std, {len(es[0]['seeds'])} seeds)")
    ax.set_xticks(bits)
    ax.set_xlabel("weight bit width (bits)")
    ax.set_ylabel(f"held-out {metric.label}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return finish(fig, ax, f"{arch}: held-out {metric.label} vs bit width", path)


def _es_cells(cells: dict, arch: str, bits: int) -> list[dict]:
    cs = sorted([c for c in cells.values() if c.get("arch") == arch and c.get("bits") == bits and c.get("es_run")],
                key=lambda c: c["seed"])
    if not cs:
        raise ValueError(f"No ES runs for {arch} at {bits} bits.")
    return cs


def plot_curves(cells: dict, arch: str, bits: int, metric, path=None):
    """Left: best search-split loss against global-stage evaluations, one line per seed (evaluation 0 is
    where the global stage starts: after the local stage). Right (when the cells have held-out reports):
    held-out ``metric`` of the best candidate at the reporting points, with RTN and FP32 as lines."""
    cs = _es_cells(cells, arch, bits)
    reports = bool(cs[0].get("reports"))
    fig, axes = new_figure(1, 2 if reports else 1, figsize=(11, 3.8) if reports else (6.4, 3.8))
    a1 = axes[0, 0]
    for i, c in enumerate(cs):
        h = c["history"]
        a1.plot([0] + [x["evaluations"] for x in h], [c["local_search_loss"]] + [x["best"] for x in h],
                color=f"C{i}", label=f"seed {c['seed']}")
    a1.axhline(cs[0]["rtn_search_loss"], color="tab:blue", ls=":", label="RTN")
    a1.set_xlabel("global-stage fitness evaluations")
    a1.set_ylabel("best search-split loss")
    a1.set_title(f"{arch} W{bits}: search fitness (0 = start of the global stage)")
    a1.legend(fontsize=8)
    if reports:
        a2, k, s = axes[0, 1], metric.key, metric.scale
        for i, c in enumerate(cs):
            a2.plot([r["evaluations"] for r in c["reports"]], [s * r[k] for r in c["reports"]], "o-", ms=3,
                    color=f"C{i}", label=f"seed {c['seed']}")
        a2.axhline(s * cs[0][f"rtn_test_{k}"], color="tab:blue", ls=":", label="RTN")
        a2.axhline(s * cs[0][f"fp32_test_{k}"], color="black", ls="--", lw=1, label="FP32")
        a2.set_xlabel("global-stage fitness evaluations")
        a2.set_ylabel(f"held-out {metric.label}")
        a2.set_title("held-out numbers at the reporting points")
        a2.legend(fontsize=8)
    return finish(fig, path=path)


def plot_moved(cells: dict, arch: str, bits: int, path=None):
    """Left: share of each layer's weights the ES moved (mean over seeds), with the layer's sensitivity
    (search-loss increase with only that layer rounded). Right: RTN rounding residuals of all weights and
    of the moved ones (densities, pooled over seeds)."""
    cs = _es_cells(cells, arch, bits)
    fig, axes = new_figure(1, 2, figsize=(11, 3.8))
    a1, a2 = axes[0]
    layers = list(cs[0]["moved"]["per_layer"])
    share = [100 * statistics.fmean(c["moved"]["per_layer"][n]["share"] for c in cs) for n in layers]
    a1.bar(range(len(layers)), share, color="tab:red", alpha=0.8)
    a1.set_xticks(range(len(layers)), layers, rotation=35, ha="right", fontsize=7)
    a1.set_xlabel("layer (graph order)")
    a1.set_ylabel("weights moved (% of the layer)")
    sens = [cs[0]["moved"]["per_layer"][n]["sensitivity"] for n in layers]
    if all(s is not None for s in sens):
        a3 = a1.twinx()
        a3.plot(range(len(layers)), sens, "k.--", lw=0.8, label="sensitivity")
        a3.set_ylabel("sensitivity: search-loss increase")
        a3.legend(fontsize=8, loc="upper right")
    a1.set_title(f"{arch} W{bits}: where the ES moved weights")
    edges = cs[0]["moved"]["residual_edges"]
    centers = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    width = edges[1] - edges[0]
    for key, label, color in (("residual_all", "all weights", "0.7"), ("residual_moved", "moved weights", "tab:red")):
        counts = [sum(c["moved"][key][i] for c in cs) for i in range(len(centers))]
        total = sum(counts) or 1
        a2.step(centers, [k / total / width for k in counts], where="mid", color=color, label=label,
                lw=2 if key == "residual_moved" else 1.5)
    a2.set_xlabel("RTN rounding residual (w - w_hat) / step (steps)")
    a2.set_ylabel("density")
    a2.set_title("rounding residuals of the moved weights")
    a2.legend(fontsize=8)
    return finish(fig, path=path)


def plot_methods_vs_time(points: list[dict], metric, title: str, ax=None, path=None):
    """Held-out ``metric`` against wall time (log scale) for rounding methods, with the Pareto front (the
    methods no other method beats in both). ``points``: ``[{label, seconds, value, std (or None), kind}]``
    with ``kind`` one of ``rtn``, ``peer``, ``es`` (colour) and values in the metric's own units."""
    fig, ax = new_axes(ax, figsize=(7.2, 4.4))
    colours = {"rtn": "tab:blue", "peer": "tab:green", "es": "tab:red"}
    s, better = metric.scale, (1 if getattr(metric, "higher_is_better", True) else -1)
    placed = []
    for p in points:
        xy = (max(p["seconds"], 0.1), s * p["value"])
        ax.errorbar(*xy, yerr=None if p.get("std") is None else s * p["std"],
                    fmt="o", color=colours.get(p.get("kind"), "tab:gray"), capsize=3)
        # labels of points that nearly coincide are stacked instead of printed on top of each other
        near = sum(1 for q in placed if abs(q[0] / xy[0] - 1) < 0.5 and abs(q[1] - xy[1]) < 1.5 * s / 100)
        ax.annotate(p["label"], xy, textcoords="offset points", xytext=(5, 4 - 11 * near), fontsize=8)
        placed.append(xy)
    front, best = [], None
    for p in sorted(points, key=lambda p: (p["seconds"], -better * p["value"])):
        if best is None or better * p["value"] > better * best:
            front.append(p)
            best = p["value"]
    ax.step([max(p["seconds"], 0.1) for p in front], [s * p["value"] for p in front], where="post",
            color="black", alpha=0.35, lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("wall time from the RTN state (s, log scale)")
    ax.set_ylabel(f"held-out {metric.label}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return finish(fig, ax, title, path)


def method_points(row: dict, metric) -> list[dict]:
    """The points of :func:`plot_methods_vs_time` for one summary row with peers (seed means and stds); the
    peers are the registered methods the row lists in ``peers``."""
    k = f"test_{metric.key}"
    pts = [{"label": "RTN", "seconds": 0.0, "value": row[f"rtn_{k}"], "std": None, "kind": "rtn"},
           {"label": "ES from RTN", "seconds": row["wall_seconds"], "value": row[f"es_{k}"],
            "std": row.get(f"es_{k}_std"), "kind": "es"}]
    for peer in row.get("peers", []):
        label = label_of(peer)
        pts.append({"label": label, "seconds": row[f"{peer}_seconds"], "value": row[f"{peer}_{k}"],
                    "std": row.get(f"{peer}_{k}_std"), "kind": "peer"})
        pts.append({"label": f"ES from {label}", "seconds": row[f"{peer}_seconds"] + row[f"es_{peer}_seconds"],
                    "value": row[f"es_{peer}_{k}"], "std": row.get(f"es_{peer}_{k}_std"), "kind": "es"})
    return pts
