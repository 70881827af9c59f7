"""Matplotlib figures for the notebooks and the CLI: one idea per figure, labelled axes with units.

Every helper returns the :class:`matplotlib.figure.Figure` it drew on. Helpers that draw a
single panel accept ``ax`` to draw into an existing axes (then the figure is ``ax.figure``);
``path`` saves the figure as a PNG (parent folders are created).
"""
from __future__ import annotations


import torch
from matplotlib.figure import Figure

from ..quant.grid import LayerQuant, QuantState
from .style import finish, new_axes

RULE_COLORS = {"maxabs_full": "tab:blue", "maxabs_narrow": "tab:orange", "mse": "tab:green"}
GRANULARITY_STYLES = {"per_channel": "-", "per_tensor": ":"}


def plot_rtn_vs_bits(rows: list[dict], fp32_accuracy: float | None = None, title: str | None = None,
                          path=None, ax=None) -> Figure:
    """Held-out test accuracy (%) against weight bit width, one line per (granularity, scale rule).

    Args:
        rows: the dicts returned by :func:`qevo_lite.quant.rtn.rtn_table` (keys ``bits``,
            ``granularity``, ``scale_rule``, ``test_accuracy``, ``chosen``; accuracies as fractions).
            The rule the baseline would choose (by search-split loss) is circled.
        fp32_accuracy: the float model's test accuracy (fraction), drawn as a dashed line.
        title: the axes title (default: a description of what is plotted).
        path: save the figure as a PNG there.
    """
    if not rows:
        raise ValueError("rows is empty: pass the list returned by qevo_lite.quant.rtn.rtn_table.")
    fig, ax = new_axes(ax, figsize=(6.5, 4.2))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["granularity"], r["scale_rule"]), []).append(r)
    for (gran, rule), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["bits"])
        ax.plot([r["bits"] for r in rs], [100 * r["test_accuracy"] for r in rs], marker="o", markersize=4,
                color=RULE_COLORS.get(rule), linestyle=GRANULARITY_STYLES.get(gran, "-"),
                label=f"{gran.replace('_', '-')}, {rule}")
    chosen = [r for r in rows if r.get("chosen")]
    if chosen:
        ax.scatter([r["bits"] for r in chosen], [100 * r["test_accuracy"] for r in chosen], s=110,
                   facecolors="none", edgecolors="black", linewidths=1.2, zorder=3,
                   label="chosen by search loss")
    if fp32_accuracy is not None:
        ax.axhline(100 * fp32_accuracy, color="black", linestyle="--", linewidth=1.2,
                   label=f"FP32 ({100 * fp32_accuracy:.1f}%)")
    bits = sorted({r["bits"] for r in rows})
    ax.set_xticks(bits)
    ax.set_xlabel("weight bit width (bits)")
    ax.set_ylabel("held-out test accuracy (%)")
    ax.set_title(title or "Nearest rounding: test accuracy vs bit width")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    finish(fig, path=path)
    return fig


def grid_levels(layer_quant: LayerQuant, channel: int = 0) -> torch.Tensor:
    """The decoded values ``scale * (code - zero_point)`` of every code ``qmin..qmax`` (of ``channel``
    when the layer is quantized per channel)."""
    lq = layer_quant
    row = channel if lq.scale.numel() > 1 else 0
    if not 0 <= row < lq.scale.numel():
        raise ValueError(f"channel must be in 0..{lq.scale.numel() - 1}, got {channel}.")
    codes = torch.arange(lq.qmin, lq.qmax + 1, dtype=torch.float32)
    return lq.scale[row] * (codes - float(lq.zero_point[row]))


def plot_weight_histogram(layer_quant: LayerQuant, ax=None, bins: int = 80, channel: int = 0,
                          all_weights: bool | None = None, title: str | None = None, path=None) -> Figure:
    """Histogram of a layer's float weights with its quantization grid drawn as vertical lines.

    Per-tensor layers show all weights and the one grid; per-channel layers show the weights of
    output ``channel`` and that channel's grid (each channel has its own step).
    ``all_weights=False`` shows only output ``channel``'s weights of a per-tensor layer too (to
    compare the shared grid with a channel's own one).
    """
    lq = layer_quant
    if lq.weight is None:
        raise ValueError("This LayerQuant has no float weight (it was loaded from a file); nothing to plot.")
    per_channel = lq.scale.numel() > 1
    if not 0 <= channel < lq.codes.shape[0]:
        raise ValueError(f"channel must be in 0..{lq.codes.shape[0] - 1}, got {channel}.")
    if all_weights is None:
        all_weights = not per_channel
    if all_weights and per_channel:
        raise ValueError("A per-channel layer has one grid per channel: plot one channel (all_weights=False).")
    levels = grid_levels(lq, channel)
    w = lq.weight if all_weights else lq.weight[channel]
    fig, ax = new_axes(ax)
    ax.hist(w.reshape(-1).numpy(), bins=bins, color="tab:gray", alpha=0.8, label="float weights")
    for i, v in enumerate(levels.tolist()):
        ax.axvline(v, color="tab:red", linewidth=1.0, alpha=0.8, label="grid levels" if i == 0 else None)
    where = "whole tensor" if all_weights else f"output channel {channel}"
    where += ", per-channel grid" if per_channel else ", per-tensor grid"
    step = float(lq.scale[channel if per_channel else 0])
    ax.set_xlabel("weight value (dimensionless)")
    ax.set_ylabel("number of weights")
    ax.set_title(title or f"{where}: {len(levels)} grid levels, step {step:.3g}", fontsize=10)
    ax.legend(fontsize=8)
    finish(fig, path=path)
    return fig


def plot_residuals(state: QuantState, ax=None, bins: int = 60, title: str | None = None, path=None) -> Figure:
    """Distribution of the rounding residuals (float weight minus its grid value, in steps) over all layers.

    Residuals lie in [-0.5, 0.5] except for clipped weights; the dashed lines mark the rounding
    boundaries at +/-0.5, where a weight is equally close to both neighbouring grid points.
    """
    r = torch.cat([lq.residual().reshape(-1) for lq in state.layers.values()])
    fig, ax = new_axes(ax)
    lo, hi = min(-0.5, float(r.min())), max(0.5, float(r.max()))
    ax.hist(r.numpy(), bins=bins, range=(lo, hi), color="tab:blue", alpha=0.8)
    for x in (-0.5, 0.5):
        ax.axvline(x, color="black", linestyle="--", linewidth=1.0)
    ax.set_xlabel("rounding residual (quantization steps)")
    ax.set_ylabel("number of weights")
    ax.set_title(title or f"Rounding residuals, {state.config.describe()} ({state.num_weights:,} weights)",
                 fontsize=10)
    finish(fig, path=path)
    return fig


def plot_flip_experiment(deltas, ax=None, title: str | None = None, n_flips: int | None = None,
                         path=None, control=None) -> Figure:
    """Histogram of search-accuracy changes (percentage points) of random boundary-flip trials versus RTN.

    Args:
        deltas: accuracy changes as fractions, as returned by
            :func:`qevo_lite.quant.flips.random_boundary_flips`.
        n_flips: weights flipped per trial (only for the title).
        control: optional changes of the control arm (flips of weights near their grid point,
            ``region="grid_point"``), drawn as an outline over the same bins.
    """
    d = 100 * torch.as_tensor(deltas, dtype=torch.float64).reshape(-1)
    if d.numel() == 0:
        raise ValueError("deltas is empty.")
    fig, ax = new_axes(ax)
    c = None if control is None else 100 * torch.as_tensor(control, dtype=torch.float64).reshape(-1)
    values, counts = torch.unique(d.round(decimals=6), return_counts=True)
    every = values if c is None else torch.unique(torch.cat([d, c]).round(decimals=6))
    width = float(every.diff().min()) * 0.8 if len(every) > 1 else 0.1
    colors = ["tab:green" if v > 0 else "tab:red" if v < 0 else "tab:gray" for v in values.tolist()]
    ax.bar(values.numpy(), counts.numpy(), width=width, color=colors, label="near the boundary")
    if c is not None:
        cv, cc = torch.unique(c.round(decimals=6), return_counts=True)
        ax.bar(cv.numpy(), cc.numpy(), width=width, fill=False, edgecolor="black", linewidth=0.8,
               label="control: near the grid point")
        ax.legend(fontsize=8, loc="upper left")
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1.0)
    up, down = float((d > 0).double().mean()), float((d < 0).double().mean())
    text = f"better than RTN: {100 * up:.0f}% of trials\nworse: {100 * down:.0f}%"
    if c is not None:
        text += f"\ncontrol: better {100 * float((c > 0).double().mean()):.0f}%, worse {100 * float((c < 0).double().mean()):.0f}%"
    ax.text(0.98, 0.97, text, transform=ax.transAxes, va="top", ha="right", fontsize=9)
    ax.set_xlabel("search-set accuracy change vs RTN (percentage points)")
    ax.set_ylabel("number of trials")
    what = f"{n_flips} random near-boundary weights" if n_flips else "random near-boundary weights"
    ax.set_title(title or f"{d.numel()} trials, each moving {what} to their other neighbour", fontsize=10)
    finish(fig, path=path)
    return fig
