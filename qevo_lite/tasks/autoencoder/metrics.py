"""Autoencoder metrics: reconstruction MSE (normalised scale), PSNR (dB, [0, 1] pixel scale) and the
AUROC of the per-image MSE as an anomaly score (see the units in :mod:`qevo_lite.tasks.autoencoder`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...core.data import Split
from ...core.evaluate import to_fast_layout
from .data import AESplits


@torch.no_grad()
def reconstruct(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Reconstructions (N, C, H, W) of images ``x`` (N, C, H, W), on the CPU, computed on the model's device."""
    device = next(model.parameters()).device
    model = model.eval()
    return torch.cat([model(to_fast_layout(x[i:i + batch_size].to(device))).float().cpu().contiguous()
                      for i in range(0, len(x), batch_size)]) if len(x) else x.clone()


def per_image_mse(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image MSE (N,) on the normalised scale (the ES fitness and the anomaly score)."""
    return F.mse_loss(recon, x, reduction="none").flatten(1).mean(1)


def psnr_db(recon: torch.Tensor, x: torch.Tensor, pixel_mean: torch.Tensor, pixel_std: torch.Tensor) -> float:
    """PSNR (dB) on the [0, 1] pixel scale of reconstructions ``recon`` of normalised images ``x``
    (both (N, C, H, W)): both are de-normalised (``x * std + mean``, per channel), then
    ``10 log10(1 / MSE)`` over all pixels (torchmetrics' ``peak_signal_noise_ratio``, data range 1)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio
    shape = (1, -1, 1, 1)
    to_pixels = lambda t: t * pixel_std.reshape(shape) + pixel_mean.reshape(shape)  # noqa: E731
    return float(peak_signal_noise_ratio(to_pixels(recon), to_pixels(x), data_range=1.0))


def auroc(scores, is_anomaly) -> float:
    """Area under the ROC curve of anomaly ``scores`` (N,) against ``is_anomaly`` (N,) bools/0-1
    (sklearn's ``roc_auc_score``; anomalies are the positive class, a higher score = more anomalous)."""
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(torch.as_tensor(is_anomaly).int().numpy(), torch.as_tensor(scores).double().numpy()))


def ae_metrics(model: nn.Module, splits: AESplits) -> dict:
    """Held-out numbers of ``model``: ``{"mse": normalised MSE on the normal-class test images,
    "psnr": PSNR (dB, [0, 1] scale) on them, "auroc": AUROC of the per-image MSE on the whole test
    split (anomalies = classes outside normal_classes)}``."""
    recon = reconstruct(model, splits.test.x)
    scores = per_image_mse(recon, splits.test.x)
    normal = ~splits.test_is_anomaly
    return {"mse": float(scores[normal].mean()),
            "psnr": psnr_db(recon[normal], splits.test.x[normal], splits.pixel_mean, splits.pixel_std),
            "auroc": auroc(scores, splits.test_is_anomaly)}


def search_mse(model: nn.Module, search: Split) -> float:
    """Mean normalised MSE on ``search`` (what the ES minimises)."""
    return float(per_image_mse(reconstruct(model, search.x), search.x).mean())


def anomaly_scores(model: nn.Module, split: Split) -> torch.Tensor:
    """Per-image anomaly score (N,): the normalised reconstruction MSE."""
    return per_image_mse(reconstruct(model, split.x), split.x)
