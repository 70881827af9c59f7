"""The figures of one task's grid: the shared ones (per model, every method's held-out metric against wall
time at the lowest width where the peers ran; metric vs bits; and per ES bit width the search curves and
the moved weights) and the task's own (:meth:`Task.figures`).

``rows`` are the summary rows and ``cells`` the cell dicts of :mod:`qevo_lite.experiment` (their method numbers
are read through :mod:`~qevo_lite.experiment.records`); a ``metric`` is a
:class:`~qevo_lite.experiment.task.Metric`.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from ..viz.experiment_plots import plot_methods_vs_time
from ..viz.style import finish, new_axes, new_figure
from .records import extra_grids, fp32_outcome, method_points, outcome


def write_figures(ctx, results: dict, out: Path) -> list[str]:
    """Write the figures of ``results`` into ``out``; return their file names."""
    import matplotlib.pyplot as plt
    task, rows, cells = ctx.task, results["summary"], results["cells"]
    head, names = task.metrics[0], []

    def save(fig, name):
        fig.savefig(Path(out) / name, dpi=120)
        plt.close(fig)
        names.append(name)

    for arch in dict.fromkeys(r["arch"] for r in rows):
        with_peers = [r for r in rows if r["arch"] == arch and r["es_run"] and r.get("peers")]
        if with_peers:   # the lowest width where the peers ran (RTN hurts on the search split)
            low = min(with_peers, key=lambda r: r["bits"])
            save(plot_methods_vs_time(method_points(low, head), head,
                                      f"{arch} W{low['bits']}: held-out {head.label} vs wall time"),
                 f"{arch}_W{low['bits']}_methods.png")
        for m in task.metrics[:task.plotted_metrics]:
            save(plot_metric_vs_bits(rows, arch, m), f"{arch}_{m.key}_vs_bits.png")
        for b in sorted({r["bits"] for r in rows if r["arch"] == arch and r["es_run"]}):
            if any(c["history"] for c in _es_cells(cells, arch, b)):   # the global stage ran (not the default)
                save(plot_curves(cells, arch, b, head), f"{arch}_W{b}_curves.png")
            save(plot_moved(cells, arch, b), f"{arch}_W{b}_moved.png")
    for fig, name in task.figures(ctx, results):
        save(fig, name)
    return names


def plot_metric_vs_bits(rows: list[dict], arch: str, metric, ax=None, path=None):
    """Held-out ``metric`` against bit width for ``arch``: FP32 (dashed), RTN on each grid, the ES
    (mean ± std over seeds)."""
    rs = sorted([r for r in rows if r["arch"] == arch], key=lambda r: r["bits"])
    if not rs:
        raise ValueError(f"No rows for {arch!r}.")
    fig, ax = new_axes(ax)
    s = metric.scale
    bits = [r["bits"] for r in rs]
    fp32 = s * fp32_outcome(rs[0]).value(metric)
    ax.axhline(fp32, color="black", ls="--", lw=1.2, label=f"FP32 ({fp32:.{metric.digits}f})")
    for g in extra_grids(rs[0]):
        ax.plot(bits, [s * outcome(r, f"rtn_{g}").value(metric) for r in rs], "s:", color="tab:gray", label=f"RTN {g}")
    ax.plot(bits, [s * outcome(r, "rtn").value(metric) for r in rs], "o-", color="tab:blue", label="RTN")
    es = [r for r in rs if r["es_run"]]
    if es:
        es_out = [outcome(r, "es") for r in es]
        ax.errorbar([r["bits"] for r in es], [s * o.value(metric) for o in es_out],
                    yerr=[s * (o.std(metric) or 0.0) for o in es_out], fmt="D-", color="tab:red", capsize=4,
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
    a1.axhline(outcome(cs[0], "rtn").value("loss", "search"), color="tab:blue", ls=":", label="RTN")
    a1.set_xlabel("global-stage fitness evaluations")
    a1.set_ylabel("best search-split loss")
    a1.set_title(f"{arch} W{bits}: search fitness (0 = start of the global stage)")
    a1.legend(fontsize=8)
    if reports:
        a2, k, s = axes[0, 1], metric.key, metric.scale
        for i, c in enumerate(cs):
            a2.plot([r["evaluations"] for r in c["reports"]], [s * r[k] for r in c["reports"]], "o-", ms=3,
                    color=f"C{i}", label=f"seed {c['seed']}")
        a2.axhline(s * outcome(cs[0], "rtn").value(metric), color="tab:blue", ls=":", label="RTN")
        a2.axhline(s * fp32_outcome(cs[0]).value(metric), color="black", ls="--", lw=1, label="FP32")
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
