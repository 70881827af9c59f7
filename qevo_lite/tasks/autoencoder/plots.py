"""Figures of the autoencoder experiment: reconstructions with error maps, ROC curves and score histograms."""
from __future__ import annotations

import torch

from ...viz.style import finish, new_figure
from .data import AESplits
from .metrics import auroc, per_image_mse, reconstruct


def plot_reconstructions(images: torch.Tensor, models: dict, splits: AESplits, labels=None, path=None):
    """A grid: row 1 the input images, then for each ``{name: model}`` its reconstructions and, below,
    the absolute error map ``|recon - x|`` on the [0, 1] pixel scale (same colour scale everywhere),
    with each image's MSE (normalised) in the title. ``images``: (N, 1, H, W) normalised."""
    n, names = len(images), list(models)
    fig, axes = new_figure(1 + 2 * len(names), n, figsize=(1.35 * n + 0.6, 1.45 * (1 + 2 * len(names))))
    std, mean = splits.pixel_std.reshape(1, -1, 1, 1), splits.pixel_mean.reshape(1, -1, 1, 1)
    pix = lambda t: (t * std + mean)[:, 0]  # noqa: E731
    x = pix(images)
    for j in range(n):
        axes[0, j].imshow(x[j].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(labels[j] if labels is not None else "input", fontsize=7)
    for i, name in enumerate(names):
        recon = reconstruct(models[name], images)
        mse = per_image_mse(recon, images)
        r = pix(recon)
        for j in range(n):
            axes[1 + 2 * i, j].imshow(r[j].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[1 + 2 * i, j].set_title(f"{name} {mse[j]:.3f}", fontsize=7)
            im = axes[2 + 2 * i, j].imshow((r[j] - x[j]).abs().numpy(), cmap="magma", vmin=0, vmax=0.5)
            axes[2 + 2 * i, j].set_title(f"|{name} error|", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, -1], shrink=0.5, label="|error| (pixel scale 0-1)")
    return finish(fig, path=path)


def plot_roc(scores: dict, is_anomaly: torch.Tensor, path=None):
    """Left: ROC curves (sklearn's ``roc_curve``) of each ``{name: per-image scores (N,)}``; right:
    histograms of the anomaly score (log MSE) of normal and anomalous test images for each name."""
    from sklearn.metrics import roc_curve
    fig, axes = new_figure(1, 2, figsize=(11, 3.8))
    a1, a2 = axes[0]
    anomalous = torch.as_tensor(is_anomaly).bool()
    y = anomalous.int().numpy()
    for i, (name, s) in enumerate(scores.items()):
        fpr, tpr, _ = roc_curve(y, torch.as_tensor(s).numpy())
        a1.plot(fpr, tpr, color=f"C{i}", label=f"{name} (AUROC {auroc(s, is_anomaly):.3f})")
        logs = torch.as_tensor(s).log10()
        for mask, ls, kind in ((~anomalous, "-", "normal"), (anomalous, ":", "anomaly")):
            a2.hist(logs[mask].numpy(), bins=50, histtype="step", density=True, color=f"C{i}", ls=ls,
                    label=f"{name} {kind}")
    a1.plot([0, 1], [0, 1], color="0.7", lw=1)
    a1.set_xlabel("false positive rate (normal flagged)")
    a1.set_ylabel("true positive rate (anomalies flagged)")
    a1.set_title("ROC: reconstruction error as anomaly score")
    a1.legend(fontsize=8)
    a2.set_xlabel("anomaly score: log10 per-image MSE (normalised)")
    a2.set_ylabel("density")
    a2.set_title("scores of normal (solid) and anomalous (dotted) test images")
    a2.legend(fontsize=7, ncol=2)
    return finish(fig, path=path)
