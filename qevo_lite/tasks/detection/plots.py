"""Figures of the detection experiment (notebook 05 and ``qevo reproduce --experiment detection``)."""
from __future__ import annotations

import statistics

import torch

from ...viz.style import finish, new_figure


def draw_boxes(ax, image: torch.Tensor, target: dict | None = None, pred: dict | None = None, classes=None,
               score_threshold: float = 0.3, title: str | None = None) -> None:
    """One canvas (1, H, W) with ground-truth boxes (green, dashed) and predicted boxes (red, with class and
    score) above ``score_threshold``."""
    from matplotlib.patches import Rectangle
    ax.imshow(image[0].cpu(), cmap="gray", vmin=0, vmax=1)
    name = (lambda k: classes[k] if classes else str(k))  # noqa: E731
    if target is not None:
        for (x1, y1, x2, y2), lab in zip(target["boxes"].tolist(), target["labels"].tolist()):
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec="lime", ls="--", lw=1.2))
            if pred is None:
                ax.text(x1, y1 - 1, name(lab), color="lime", fontsize=6, va="bottom")
    if pred is not None:
        for (x1, y1, x2, y2), lab, s in zip(pred["boxes"].tolist(), pred["labels"].tolist(), pred["scores"].tolist()):
            if s < score_threshold:
                continue
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec="red", lw=1.2))
            ax.text(x1, y1 - 1, f"{name(lab)} {s:.2f}", color="red", fontsize=6, va="bottom")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def plot_samples(split, classes=None, n: int = 8, path=None):
    """The first ``n`` canvases of a split with their ground-truth boxes and labels."""
    cols = min(n, 4)
    fig, axes = new_figure((n + cols - 1) // cols, cols, figsize=(2.4 * cols, 2.4 * ((n + cols - 1) // cols)))
    for i, ax in enumerate(axes.flat):
        if i < n:
            draw_boxes(ax, split.x[i], split.targets[i], classes=classes, title=f"canvas {i}")
        else:
            ax.axis("off")
    fig.suptitle("generated canvases: glyphs pasted at random positions and scales, tight boxes (green)")
    return finish(fig, path=path)


def plot_before_after(split, preds_by_name: dict, indices, classes=None, path=None, score_threshold: float = 0.3):
    """Rows = canvases ``indices``; columns = models (e.g. FP32, RTN, ES): predicted boxes (red) over the
    ground truth (green, dashed)."""
    names = list(preds_by_name)
    fig, axes = new_figure(len(indices), len(names), figsize=(2.5 * len(names), 2.5 * len(indices)))
    for r, i in enumerate(indices):
        for c, name in enumerate(names):
            draw_boxes(axes[r, c], split.x[i], split.targets[i], preds_by_name[name][i], classes,
                       score_threshold, title=f"{name}, canvas {i}" if r == 0 else f"canvas {i}")
    fig.suptitle(f"predicted boxes (red, score >= {score_threshold}) and ground truth (green)")
    return finish(fig, path=path)


def plot_fitness_comparison(comparisons: list[dict], path=None):
    """Left: held-out mAP@[.5:.95] and mAP@0.5 of RTN and of the ES with each fitness (one dot per seed, bars
    at the seed mean; the axis starts at 0, so small differences look small). Right: the best fitness against
    generations, normalised to its start (1 = RTN), for both fitnesses."""
    fig, axes = new_figure(1, 2, figsize=(10.5, 3.6))
    a1, a2 = axes[0]
    c0 = comparisons[0]
    colours = {"rtn": "tab:blue", "loss": "tab:red", "map": "tab:purple"}
    for group, metric in enumerate(("map", "map50")):
        for offset, name in ((-0.27, "rtn"), (0.0, "loss"), (0.27, "map")):
            vals = [100 * (c[f"rtn_test_{metric}"] if name == "rtn" else c[name][f"test_{metric}"]) for c in comparisons]
            x = group + offset
            a1.bar(x, statistics.fmean(vals), color=colours[name], alpha=0.35, width=0.25,
                   label={"rtn": "RTN", "loss": "ES, fitness: detection loss",
                          "map": "ES, fitness: 1 - mAP@[.5:.95]"}[name] if group == 0 else None)
            a1.plot([x] * len(vals), vals, "o", color=colours[name], ms=4)
    a1.set_xticks([0, 1], ["mAP@[.5:.95]", "mAP@0.5"])
    a1.set_ylim(0, 100)
    a1.set_ylabel("held-out mAP (%)")
    a1.set_title(f"{c0['arch']} W{c0['bits']}: {c0['budget']} evaluations from RTN, {len(comparisons)} seed(s)")
    a1.legend(fontsize=7, loc="upper left")
    for c in comparisons:
        for name, color in (("loss", "tab:red"), ("map", "tab:purple")):
            curve = c[name]["curve"]
            if curve and curve[0]:
                a2.plot(range(1, len(curve) + 1), [v / curve[0] for v in curve], color=color, alpha=0.7,
                        label=("detection loss" if name == "loss" else "1 - mAP@[.5:.95]") if c is c0 else None)
    a2.set_xlabel("generation")
    a2.set_ylabel("best search fitness / first generation's")
    a2.set_title("search fitness during the run (lower is better)")
    a2.legend(fontsize=8)
    return finish(fig, path=path)
