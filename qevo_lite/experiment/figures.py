"""The figures of one task's grid: the shared ones (per model, every method's held-out metric against wall
time at the lowest width where the peers ran; metric vs bits; and per ES bit width the search curves and
the moved weights) and the task's own (:meth:`Task.figures`)."""
from __future__ import annotations

from pathlib import Path

from ..viz.experiment_plots import method_points, plot_curves, plot_methods_vs_time, plot_metric_vs_bits, plot_moved


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
            save(plot_curves(cells, arch, b, head), f"{arch}_W{b}_curves.png")
            save(plot_moved(cells, arch, b), f"{arch}_W{b}_moved.png")
    for fig, name in task.figures(ctx, results):
        save(fig, name)
    return names
