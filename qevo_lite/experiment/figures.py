"""The figures of one task's grid: the shared ones (metric vs bits per model, and per ES bit width the
search curves and the moved weights) and the task's own (:meth:`Task.figures`)."""
from __future__ import annotations

from pathlib import Path

from ..viz.experiment_plots import plot_curves, plot_metric_vs_bits, plot_moved


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
        for m in task.metrics[:task.plotted_metrics]:
            save(plot_metric_vs_bits(rows, arch, m), f"{arch}_{m.key}_vs_bits.png")
        for b in sorted({r["bits"] for r in rows if r["arch"] == arch and r["es_run"]}):
            save(plot_curves(cells, arch, b, head), f"{arch}_W{b}_curves.png")
            save(plot_moved(cells, arch, b), f"{arch}_W{b}_moved.png")
    for fig, name in task.figures(ctx, results):
        save(fig, name)
    return names
