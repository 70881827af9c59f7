"""The one figure style of the package: how figures are made and saved.

Fresh figures are made with ``matplotlib.pyplot`` (constrained layout) so notebooks show them inline;
a helper that draws one panel accepts ``ax`` to draw into an existing axes instead.
"""
from __future__ import annotations

from pathlib import Path

DPI = 120


def new_axes(ax=None, figsize=(6.4, 4.0)):
    """``(figure, axes)``: the given axes and its figure, or a fresh single-panel figure."""
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=figsize, layout="constrained")


def new_figure(nrows: int = 1, ncols: int = 1, figsize=(6.4, 4.0)):
    """``(figure, axes array of shape (nrows, ncols))``."""
    import matplotlib.pyplot as plt
    return plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", squeeze=False)


def finish(fig, ax=None, title: str | None = None, path=None):
    """Set ``ax``'s title, save ``fig`` as a PNG at ``path`` (folders created) if given; return ``fig``."""
    if title and ax is not None:
        ax.set_title(title)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    return fig
