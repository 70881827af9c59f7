"""Figures of ES runs: fitness over evaluations, with held-out metrics at the reporting points."""
from __future__ import annotations

import matplotlib.pyplot as plt


def plot_history(history: list, reports: list | None = None, ax=None, label: str = "ES",
                 report_key: str = "accuracy", title: str | None = None, path=None):
    """Best search-split loss (and offspring mean) against evaluations; held-out ``report_key`` from
    ``reports`` on a second axis. ``history``/``reports`` are :class:`~qevo_lite.es.ESResult` fields.
    Returns the Figure."""
    fig = ax.figure if ax is not None else plt.figure(figsize=(6.4, 3.8)).gca().figure
    ax = ax if ax is not None else fig.axes[0]
    evals = [h["evaluations"] for h in history]
    ax.plot(evals, [h["best"] for h in history], label=f"{label}: best (search)")
    ax.plot(evals, [h["mean"] for h in history], alpha=0.4, lw=0.8, label=f"{label}: offspring mean (search)")
    ax.set_xlabel("fitness evaluations")
    ax.set_ylabel("search-split loss (nats)")
    if reports:
        ax2 = ax.twinx()
        ax2.plot([r["evaluations"] for r in reports], [r[report_key] for r in reports], "o--", color="C3",
                 label=f"{label}: held-out {report_key}")
        ax2.set_ylabel(f"held-out {report_key}")
        ax2.legend(loc="center right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
