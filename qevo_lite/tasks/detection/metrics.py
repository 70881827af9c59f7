"""Detection metrics: torchmetrics' COCO-style mAP, model predictions and the held-out evaluation."""
from __future__ import annotations

import torch
from torch import nn

from ...core.evaluate import to_fast_layout
from .targets import decode, detection_loss, targets_from_dense


def _map_metric():
    from torchmetrics.detection import MeanAveragePrecision
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")


def mean_average_precision(preds: list, targets: list) -> dict:
    """``{"map": mAP@[.5:.95], "map50": mAP@0.5}`` (fractions) of torchvision-format predictions."""
    metric = _map_metric()
    metric.update([{k: v.cpu() for k, v in p.items()} for p in preds],
                  [{k: v.cpu() for k, v in t.items()} for t in targets])
    r = metric.compute()
    return {"map": float(r["map"]), "map50": float(r["map_50"])}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> list[dict]:
    """Decoded predictions of ``model`` on images ``x`` (N, C, H, W)."""
    device = next(model.parameters()).device
    model = to_fast_layout(model.eval())
    preds = []
    for i in range(0, len(x), batch_size):
        preds += decode(model(to_fast_layout(x[i:i + batch_size].to(device))).cpu())
    return preds


@torch.no_grad()
def evaluate_detector(model: nn.Module, split, batch_size: int = 256) -> dict:
    """``{"loss": mean per-image detection loss, "map": mAP@[.5:.95], "map50": mAP@0.5}`` on a
    :class:`~qevo_lite.tasks.detection.data.DetectionSplit`."""
    device = next(model.parameters()).device
    model = to_fast_layout(model.eval())
    losses, preds = [], []
    for i in range(0, len(split), batch_size):
        out = model(to_fast_layout(split.x[i:i + batch_size].to(device)))
        losses.append(detection_loss(out, split.y[i:i + batch_size].to(device)).cpu())
        preds += decode(out.cpu())
    return {"loss": torch.cat(losses).mean().item(), **mean_average_precision(preds, split.targets)}


@torch.no_grad()
def detection_loss_on(model: nn.Module, split, batch_size: int = 256) -> float:
    """Mean per-image detection loss of ``model`` on a split (no decoding, no mAP: fast)."""
    device = next(model.parameters()).device
    model = to_fast_layout(model.eval())
    losses = [detection_loss(model(to_fast_layout(split.x[i:i + batch_size].to(device))),
                             split.y[i:i + batch_size].to(device)).cpu() for i in range(0, len(split), batch_size)]
    return torch.cat(losses).mean().item()


def map_fitness(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mAP as an ES fitness: ``1 - mAP@[.5:.95]`` of the whole chunk (the metric the tables report), repeated
    for every image (N,).

    mAP is a statistic of a whole set of images (detections of all images are ranked together), so it
    has no per-image value: every image of a chunk gets the same number, which leaves the evaluator's
    paired early rejection nothing to test. Ground truth is recovered from the dense targets."""
    m = mean_average_precision(decode(outputs.cpu()), targets_from_dense(y.cpu()))["map"]
    return torch.full((len(y),), 1.0 - m)
