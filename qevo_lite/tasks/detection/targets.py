"""Dense detection targets on the stride-4 grid, the per-image detection loss and decoding into boxes.

* :func:`encode_targets`: torchvision-format targets -> (N, K + 5, G, G) (heatmaps, size, offset, centre mask),
  one tensor the evaluators can slice along dim 0;
* :func:`detection_loss`: per-image loss (N,) (the ES fitness);
* :func:`decode`: heatmap peaks, top-k and class-wise NMS -> torchvision-format predictions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

STRIDE = 4
SIZE_WEIGHT, OFFSET_WEIGHT = 0.1, 1.0


def encode_targets(targets: list, num_classes: int, canvas: int, stride: int = STRIDE) -> torch.Tensor:
    """Dense targets (N, K + 5, G, G), G = canvas / stride, from torchvision-format targets.

    Channels: ``0..K-1`` Gaussian heatmaps (exactly 1 at each object's centre cell, sigma = sqrt(w h) / 6
    cells, at least 0.5; overlapping Gaussians of one class keep the maximum); ``K, K+1``: box width and
    height in cells; ``K+2, K+3``: centre offset inside its cell (0..1); ``K+4``: 1 at centre cells.
    """
    g = canvas // stride
    out = torch.zeros(len(targets), num_classes + 5, g, g)
    ys, xs = torch.meshgrid(torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32),
                            indexing="ij")
    for i, t in enumerate(targets):
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            x1, y1, x2, y2 = (v / stride for v in box)
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            ix, iy = min(int(cx), g - 1), min(int(cy), g - 1)
            sigma = max(0.5, math.sqrt(w * h) / 6)
            heat = torch.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma ** 2))
            out[i, label] = torch.maximum(out[i, label], heat)
            out[i, label, iy, ix] = 1.0
            out[i, num_classes:num_classes + 5, iy, ix] = torch.tensor([w, h, cx - ix, cy - iy, 1.0])
    return out


def outputs_from_targets(y: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """The model output (N, K + 4, G, G) a perfect detector would give for dense targets ``y``."""
    k = y.shape[1] - 5
    heat = y[:, :k].clamp(eps, 1 - eps)
    return torch.cat([torch.log(heat) - torch.log1p(-heat), y[:, k:k + 4]], 1)


def detection_loss(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image detection loss (N,): focal heatmap loss + 0.1 L1 size + L1 offset, per object.

    ``outputs`` (N, K + 4, G, G) from a detector, ``y`` (N, K + 5, G, G) from :func:`encode_targets`.
    Heatmap: CenterNet's penalty-reduced focal loss (alpha 2, beta 4); size (cells) and offset (cells) are
    L1 at the centre cells only. Everything is divided by the image's number of objects (at least 1).
    """
    k = y.shape[1] - 5
    outputs = outputs.float()
    logit, gt = outputs[:, :k], y[:, :k]
    p = torch.sigmoid(logit).clamp(1e-4, 1 - 1e-4)
    pos = (gt >= 1.0).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log1p(-p) * p ** 2 * (1 - gt) ** 4 * (1 - pos)
    mask = y[:, k + 4:k + 5]
    n = mask.flatten(1).sum(1).clamp(min=1)
    reg = (outputs[:, k:k + 4] - y[:, k:k + 4]).abs() * mask
    size = reg[:, :2].flatten(1).sum(1)
    off = reg[:, 2:].flatten(1).sum(1)
    return ((pos_loss + neg_loss).flatten(1).sum(1) + SIZE_WEIGHT * size + OFFSET_WEIGHT * off) / n


@torch.no_grad()
def decode(outputs: torch.Tensor, stride: int = STRIDE, top_k: int = 10, score_threshold: float = 0.05,
           nms_iou: float = 0.5) -> list[dict]:
    """torchvision-format predictions from detector outputs (N, K + 4, G, G).

    Peaks of the class heatmaps (a cell equal to the max of its 3x3 neighbourhood), the ``top_k`` best
    above ``score_threshold`` per image, boxes ``centre +/- size / 2`` in pixels (clipped to the image),
    then class-wise NMS per image (``torchvision.ops.batched_nms``, IoU ``nms_iou``). Returns one
    ``{"boxes": (m, 4) xyxy pixels, "scores": (m,), "labels": (m,) int64}`` per image, best first.
    """
    from torchvision.ops import batched_nms, clip_boxes_to_image
    outputs = outputs.float()
    n, c, g, _ = outputs.shape
    k = c - 4
    heat = torch.sigmoid(outputs[:, :k])
    peaks = heat * (heat == F.max_pool2d(heat, 3, 1, 1)).float()
    scores, idx = peaks.flatten(1).topk(min(top_k, k * g * g), dim=1)          # (N, top_k)
    labels, cell = idx // (g * g), idx % (g * g)
    reg = outputs[:, k:].flatten(2).gather(2, cell[:, None].expand(n, 4, cell.shape[1]))  # (N, 4, top_k)
    w, h = reg[:, 0] * stride, reg[:, 1] * stride
    cx, cy = (cell % g + reg[:, 2]) * stride, (cell // g + reg[:, 3]) * stride
    boxes = clip_boxes_to_image(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1), (g * stride,) * 2)
    keep = scores > score_threshold
    image = torch.arange(n)[:, None].expand_as(keep)[keep]
    b, s, lab = boxes[keep], scores[keep], labels[keep]
    order = batched_nms(b, s, image * k + lab, nms_iou)        # kept, by decreasing score
    order = order[torch.argsort(image[order], stable=True)]     # grouped by image, best first
    counts = torch.bincount(image[order], minlength=n).tolist()
    return [{"boxes": bb, "scores": ss, "labels": ll.long()} for bb, ss, ll in
            zip(b[order].split(counts), s[order].split(counts), lab[order].split(counts))]


def targets_from_dense(y: torch.Tensor, stride: int = STRIDE) -> list[dict]:
    """torchvision-format ground truth recovered from dense targets (N, K + 5, G, G) (exact)."""
    preds = decode(outputs_from_targets(y), stride, top_k=y.shape[2] * y.shape[3], score_threshold=0.5)
    return [{"boxes": p["boxes"], "labels": p["labels"]} for p in preds]
