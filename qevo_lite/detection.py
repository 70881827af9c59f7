"""Quantized object detectors: two small single-shot detectors, their targets, loss, decoding and mAP.

Why not torchvision's detectors? FCOS, RetinaNet, SSD and Faster R-CNN take a *list* of images and a
*list* of target dicts, resize and batch them internally, match anchors or points to boxes inside
``forward`` (data-dependent Python control flow) and return the *batch mean* of their losses. The ES
needs the opposite on every one of its thousands of evaluations: :class:`~qevo_lite.fitness.
IncrementalEvaluator` traces ``model(x)`` with ``torch.fx`` (tensor in, tensor out), caches the
activations upstream of the changed layers, and compares a candidate with its parent image by image
(a paired test for early rejection), so it needs a loss per image. So the detectors here are compact
CenterNet-style single-shot detectors whose forward is one tensor in, one tensor out:

* input: images (N, C, H, W), H = W = 64 on the generated canvases;
* output: (N, K + 4, H / 4, W / 4) on a stride-4 grid: K class-heatmap logits (an object is a peak
  at the grid cell holding its box centre), then the box width and height (in grid cells) and the
  sub-cell offset of the centre (in cells, 0..1);
* targets: the same grid, encoded densely by :func:`encode_targets` as (N, K + 5, H / 4, W / 4):
  Gaussian heatmaps, size, offset and a mask of the centre cells, so that a batch of targets is one
  tensor the evaluator can slice along dim 0;
* :func:`detection_loss`: per-image loss (N,): penalty-reduced focal loss on the heatmaps plus L1 on
  size (x0.1) and offset at the centres, divided by the number of objects;
* :func:`decode`: peaks of the heatmap (3x3 max-pool), top-k, then ``torchvision.ops.batched_nms``:
  torchvision-format predictions (``boxes`` xyxy pixels, ``scores``, ``labels``).

Metrics are torchmetrics' ``MeanAveragePrecision`` (COCO-style mAP@[.5:.95] and mAP@0.5).

The two detectors share the head (3x3 conv-BN-ReLU, then a 1x1 conv to K + 4 channels) and differ
in the backbone: a VGG-style stack of 3x3 conv-BN-ReLU with two max-pools, or a ResNet-style stem
and three basic blocks (:class:`qevo_lite.models.BasicBlock`). Only Conv2d/Linear weights are
quantized; BN is folded first (:func:`qevo_lite.fold.fold_batchnorm`).

The experiment (:func:`reproduce_task`, ``qevo reproduce --experiment detection``) is the
classification one with a detection fitness: RTN per channel with the scale rule of lowest
search-split detection loss, then the global (1+lambda) ES of :mod:`qevo_lite.experiments` on the
per-image detection loss of the search canvases, held-out mAP on the test canvases. The local
(layer-output MSE) stage is available (``local_evaluations > 0``) but off in the profiles: on these
detectors it lowered held-out mAP (VGG W3, seed 2, 128 evaluations per layer: mAP@[.5:.95] 0.382 ->
0.285), because the MSE of the head's outputs is dominated by background heatmap logits, not boxes.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .experiments import Overridable
from .models import BasicBlock, conv_bn_relu

STRIDE = 4
SIZE_WEIGHT, OFFSET_WEIGHT = 0.1, 1.0


# ----------------------------------------------------------------------------- models
class CenterHead(nn.Module):
    """3x3 conv-BN-ReLU then a 1x1 conv to ``num_classes + 4`` maps (heatmap logits, w, h, dx, dy)."""

    def __init__(self, c_in: int, num_classes: int, width: int = 64):
        super().__init__()
        self.conv = conv_bn_relu(c_in, width)
        self.out = nn.Conv2d(width, num_classes + 4, 1)
        with torch.no_grad():  # start with a low object prior (CenterNet's -2.19 = logit(0.1))
            self.out.bias[:num_classes].fill_(-2.19)

    def forward(self, x):
        return self.out(self.conv(x))


class VGGDetector(nn.Module):
    """VGG-style backbone (16-32-64 channels, two 2x2 max-pools: stride 4) + :class:`CenterHead`.

    (N, C, H, W) -> (N, K + 4, H / 4, W / 4)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths=(16, 32, 64)):
        super().__init__()
        a, b, c = widths
        self.backbone = nn.Sequential(
            conv_bn_relu(in_channels, a), nn.MaxPool2d(2),
            conv_bn_relu(a, b), conv_bn_relu(b, b), nn.MaxPool2d(2),
            conv_bn_relu(b, c), conv_bn_relu(c, c))
        self.head = CenterHead(c, num_classes, c)

    def forward(self, x):
        return self.head(self.backbone(x))


class ResNetDetector(nn.Module):
    """ResNet-style backbone (3x3 stem with 16 channels, basic blocks 32 (stride 2), 64 (stride 2), 64) +
    :class:`CenterHead`.

    (N, C, H, W) -> (N, K + 4, H / 4, W / 4)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths=(16, 32, 64)):
        super().__init__()
        a, b, c = widths
        self.stem = conv_bn_relu(in_channels, a)
        self.backbone = nn.Sequential(BasicBlock(a, b, 2), BasicBlock(b, c, 2), BasicBlock(c, c))
        self.head = CenterHead(c, num_classes, c)

    def forward(self, x):
        return self.head(self.backbone(self.stem(x)))


ARCHITECTURES = {"det_vgg_small": VGGDetector, "det_resnet_small": ResNetDetector}
# training recipes of the committed checkpoints (about 2-3 minutes each on 2 CPU cores)
RECIPES = {"det_vgg_small": {"epochs": 5, "lr": 3e-3}, "det_resnet_small": {"epochs": 4, "lr": 3e-3}}
TRAIN_CANVASES = 6000   # training canvases of the committed checkpoints
TEST_CANVASES = 1000    # held-out canvases of the FP32 mAP in the manifest


def build_model(arch: str, entry: dict | None = None) -> nn.Module:
    """A fresh detector ``arch`` shaped as the manifest ``entry`` says (``in_channels``, ``num_classes``)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown detector {arch!r}; choose one of {sorted(ARCHITECTURES)}.")
    entry = entry or {}
    return ARCHITECTURES[arch](entry.get("in_channels", 1), entry.get("num_classes", 10))


# ----------------------------------------------------------------------------- targets
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


# ----------------------------------------------------------------------------- metrics
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
    from .evaluate import to_fast_layout
    device = next(model.parameters()).device
    model = to_fast_layout(model.eval())
    preds = []
    for i in range(0, len(x), batch_size):
        preds += decode(model(to_fast_layout(x[i:i + batch_size].to(device))).cpu())
    return preds


@torch.no_grad()
def evaluate_detector(model: nn.Module, split, batch_size: int = 256) -> dict:
    """``{"loss": mean per-image detection loss, "map": mAP@[.5:.95], "map50": mAP@0.5}`` on a
    :class:`~qevo_lite.detection_data.DetectionSplit`."""
    from .evaluate import to_fast_layout
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
    from .evaluate import to_fast_layout
    device = next(model.parameters()).device
    model = to_fast_layout(model.eval())
    losses = [detection_loss(model(to_fast_layout(split.x[i:i + batch_size].to(device))),
                             split.y[i:i + batch_size].to(device)).cpu() for i in range(0, len(split), batch_size)]
    return torch.cat(losses).mean().item()


def map_fitness(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mAP as an ES fitness: ``1 - mAP@0.5`` of the whole chunk, repeated for every image (N,).

    mAP is a statistic of a whole set of images (detections of all images are ranked together), so it
    has no per-image value: every image of a chunk gets the same number, which leaves the evaluator's
    paired early rejection nothing to test. Ground truth is recovered from the dense targets."""
    m = mean_average_precision(decode(outputs.cpu()), targets_from_dense(y.cpu()))["map50"]
    return torch.full((len(y),), 1.0 - m)


# ----------------------------------------------------------------------------- training
def train_detector(model: nn.Module, train, epochs: int = 6, batch_size: int = 64, lr: float = 3e-3,
                   seed: int = 0, device="cpu", progress: bool = True) -> list[dict]:
    """Train ``model`` in place on :func:`detection_loss` (:func:`qevo_lite.train.train_loop`, AdamW,
    one-cycle, weight decay 5e-4, channels_last batches: faster convs on the CPU).

    Returns one ``{"epoch", "loss", "seconds"}`` per epoch."""
    from .train import train_loop
    history = train_loop(model, train, lambda out, x, y: detection_loss(out, y).mean(), epochs, batch_size, lr,
                         seed=seed, device=device, progress=progress, fast_layout=True)
    model.eval()
    return history


# ----------------------------------------------------------------------------- datasets and checkpoints
# dataset name -> glyph source of the generated canvases ("auto": Fashion-MNIST, else the digits)
DATASETS = {"glyph_boxes": "auto", "glyph_boxes_digits": "digits"}
_SPLITS_CACHE: dict = {}


def load_dataset(dataset: str = "glyph_boxes", seed: int = 0, train_size: int = TRAIN_CANVASES,
                 search_size: int = 256, test_size: int = 1000, download: bool = False):
    """The detection splits of ``dataset`` (cached per arguments).

    ``glyph_boxes``: generated canvases of Fashion-MNIST glyphs (digits when Fashion-MNIST is missing,
    with a warning); ``glyph_boxes_digits``: of scikit-learn digits; ``voc``: Pascal VOC (full profile,
    needs the files or ``download=True``; not converted into canvases by this package)."""
    from .detection_data import load_detection_splits, load_voc
    if dataset == "voc":
        load_voc(download=download)  # raises a clear DatasetUnavailable offline
        raise NotImplementedError("Pascal VOC was found, but the VOC training pipeline (variable image sizes, "
                                  "20 classes, RGB) is not part of qevo-lite yet; use glyph_boxes.")
    if dataset not in DATASETS:
        raise ValueError(f"Unknown detection dataset {dataset!r}; choose one of {sorted(DATASETS)} or 'voc'.")
    key = (dataset, seed, train_size, search_size, test_size)
    if key not in _SPLITS_CACHE:
        _SPLITS_CACHE[key] = load_detection_splits(train_size, search_size, test_size, seed=seed,
                                                   glyphs=DATASETS[dataset])
    return _SPLITS_CACHE[key]


def train_model(arch: str, dataset: str = "glyph_boxes", seed: int = 0, epochs: int | None = None,
                device="cpu", progress: bool = True) -> tuple[nn.Module, dict]:
    """Train detector ``arch`` on ``dataset``'s train canvases (the registry's hook, ``qevo train``).

    Returns ``(model in eval mode on the CPU, manifest fields)``; the fields hold the recipe, the data
    shape and the FP32 held-out mAP on the test canvases (``fp32_test_map50``, ``fp32_test_map``)."""
    recipe = dict(RECIPES.get(arch, {"epochs": 6, "lr": 3e-3}))
    if epochs is not None:
        recipe["epochs"] = epochs
    splits = load_dataset(dataset, seed=seed, train_size=TRAIN_CANVASES, test_size=TEST_CANVASES)
    torch.manual_seed(seed)
    model = build_model(arch, {"in_channels": splits.train.x.shape[1], "num_classes": splits.num_classes})
    t0 = time.perf_counter()
    history = train_detector(model, splits.train, epochs=recipe["epochs"], lr=recipe["lr"], seed=seed,
                             device=device, progress=progress)
    seconds = time.perf_counter() - t0
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    test = evaluate_detector(model, splits.test)
    return model, {"in_channels": splits.train.x.shape[1], "num_classes": splits.num_classes,
                   "canvas": splits.canvas, "stride": STRIDE, "train_canvases": len(splits.train),
                   "glyph_source": splits.glyph_source, "epochs": recipe["epochs"], "lr": recipe["lr"],
                   "train_seconds": round(seconds, 1), "final_train_loss": round(history[-1]["loss"], 4),
                   "fp32_test_map50": round(test["map50"], 4), "fp32_test_map": round(test["map"], 4)}


# ----------------------------------------------------------------------------- the experiment
@dataclass(frozen=True)
class DetectionProfile(Overridable):
    """Sizes and budgets of the detection experiment (see :data:`PROFILES`).

    Attributes:
        name: ``fast`` or ``full``.
        dataset: ``glyph_boxes`` (generated, offline) or ``voc`` (full profile, needs internet).
        models: detector architectures.
        bits: bit widths of the grid (RTN at all; the ES where RTN loses search mAP@0.5).
        seeds: ES seeds (the canvases are fixed by ``split_seed``).
        search_size: search canvases (the ES fitness set; made of training glyphs never trained on).
        test_size: held-out test canvases (official test glyphs only).
        local_samples, local_evaluations, local_moves: the local (layer-output MSE) stage, as in
            :class:`qevo_lite.experiments.Profile`; ``local_evaluations=0`` skips it (the fast profile:
            on these detectors it lowered held-out mAP, see notebook 05).
        budget: global-stage evaluations per cell (fitness: per-image detection loss on the search split).
        lam, p: offspring per generation and initial share of a layer's weights moved.
        min_drop: run the ES only where RTN's search mAP@[.5:.95] is at least this far below FP32's.
        granularity: grid of RTN and the ES.
        split_seed: the canvases the checkpoints were trained against.
        train_epochs: epochs when a missing checkpoint is trained (None: the recipe's).
        compare_budget: evaluations of each run of the fitness comparison (mAP vs loss), 0 to skip it.
        compare_model: the detector of the fitness comparison (at the lowest bit width with an ES run).
        compare_seeds: seeds of the fitness comparison.
    """

    what = "detection profile"

    name: str
    dataset: str = "glyph_boxes"
    models: tuple = ("det_vgg_small", "det_resnet_small")
    bits: tuple = (2, 3, 4)
    seeds: tuple = (0, 1, 2)
    search_size: int = 192
    test_size: int = 400
    local_samples: int = 64
    local_evaluations: int = 0
    local_moves: int | None = 4
    budget: int = 24
    lam: int = 8
    p: float = 0.002
    min_drop: float = 0.01
    granularity: str = "per_channel"
    split_seed: int = 0
    train_epochs: int | None = None
    compare_budget: int = 12
    compare_model: str = "det_vgg_small"
    compare_seeds: tuple = (0,)



PROFILES = {
    "fast": DetectionProfile("fast"),
    "full": DetectionProfile("full", dataset="voc", bits=(2, 3, 4, 8), search_size=2048, test_size=5000,
                             local_samples=512, local_evaluations=0, budget=2000, compare_budget=200),
}


def get_profile(name: str | None = None, **overrides) -> DetectionProfile:
    """The detection profile ``name`` (default ``fast``) with ``overrides`` applied."""
    name = name or "fast"
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}; choose one of {sorted(PROFILES)}.")
    return PROFILES[name].with_overrides(**overrides)


def rtn_for_detection(fmodel: nn.Module, search, bits: int, granularity: str = "per_channel") -> dict:
    """Nearest rounding with the scale rule of lowest *search-split detection loss* (never test mAP):
    :func:`qevo_lite.baseline.best_rtn` scored by :func:`detection_loss_on`.

    Returns ``{"state", "rule", "losses": {rule: mean per-image search loss}}``."""
    from .baseline import best_rtn
    res = best_rtn(fmodel, search, bits, granularity, score=detection_loss_on)
    return {"state": res.state, "rule": res.config.scale_rule,
            "losses": {rule: v["loss"] for rule, v in res.scores.items()}}


class DetectionContext:
    """What the cells share: the canvases, the BN-folded detectors, FP32 and RTN numbers (cached)."""

    def __init__(self, profile: DetectionProfile, device=None, checkpoint_dir=None, download: bool = False):
        from .evaluate import default_device
        self.profile = profile
        self.device = torch.device(device) if device is not None else default_device()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.download = download
        self._splits, self._models, self._fp32, self._rtn = None, {}, {}, {}
        self.es_codes: dict = {}  # (arch, bits, seed) -> evolved codes of the cells run in this session

    @property
    def splits(self):
        if self._splits is None:
            p = self.profile
            self._splits = load_dataset(p.dataset, seed=p.split_seed, train_size=0, search_size=p.search_size,
                                        test_size=p.test_size, download=self.download)
        return self._splits

    @property
    def search(self):
        return self.splits.search

    @property
    def test(self):
        return self.splits.test

    def model(self, arch: str):
        """``(BN-folded float detector on the device, manifest entry)``; trains a missing checkpoint."""
        from .checkpoints import load_pretrained, train_checkpoint
        from .fold import fold_batchnorm
        if arch not in self._models:
            p = self.profile
            if p.train_epochs is None:
                model, entry = load_pretrained(arch, p.dataset, directory=self.checkpoint_dir)
            else:
                try:
                    model, entry = load_pretrained(arch, p.dataset, directory=self.checkpoint_dir,
                                                   train_if_missing=False)
                except (FileNotFoundError, ValueError) as exc:
                    print(f"{exc} Training it now ({p.train_epochs} epochs).")
                    model, entry = train_checkpoint(arch, p.dataset, seed=p.split_seed, epochs=p.train_epochs,
                                                    directory=self.checkpoint_dir, progress=False)
            if entry.get("split_seed", p.split_seed) != p.split_seed:
                raise ValueError(f"{arch} was trained against split seed {entry['split_seed']}, the profile uses "
                                 f"{p.split_seed}: its search canvases could contain training glyphs.")
            self._models[arch] = (fold_batchnorm(model).to(self.device).eval(), entry)
        return self._models[arch]

    def fp32(self, arch: str) -> dict:
        if arch not in self._fp32:
            fmodel, _ = self.model(arch)
            self._fp32[arch] = {"search": evaluate_detector(fmodel, self.search),
                                "test": evaluate_detector(fmodel, self.test)}
        return self._fp32[arch]

    def rtn(self, arch: str, bits: int) -> dict:
        key = (arch, bits)
        if key not in self._rtn:
            fmodel, _ = self.model(arch)
            r = rtn_for_detection(fmodel, self.search, bits, self.profile.granularity)
            qmodel = r["state"].to_model(fmodel)
            r["search"] = evaluate_detector(qmodel, self.search)
            r["test"] = evaluate_detector(qmodel, self.test)
            self._rtn[key] = r
        return self._rtn[key]

    def settings(self, arch: str) -> dict:
        p = asdict(self.profile)
        for k in ("name", "models", "bits", "seeds", "compare_model", "compare_budget", "compare_seeds"):
            p.pop(k)
        return {"arch": arch, **p}


def _metrics(d: dict, prefix: str) -> dict:
    return {f"{prefix}_{k}": d[k] for k in ("loss", "map", "map50")}


def run_detection_cell(ctx: DetectionContext, arch: str, bits: int, seed: int, checkpoint_dir=None,
                       keep_codes: bool = False) -> dict:
    """One (detector, bits, seed) cell: RTN, then (where RTN loses search mAP@0.5) local + global ES.

    Returns a JSON-ready dict of every number; mAPs are fractions in [0, 1], losses per image. With
    ``keep_codes``, ``"_codes"`` also holds the evolved codes ``{layer: int16 tensor}``."""
    from .experiments import global_stage, local_stage, moved_analysis
    p = ctx.profile
    fmodel, entry = ctx.model(arch)
    fp32, rtn = ctx.fp32(arch), ctx.rtn(arch, bits)
    rtn_state = rtn["state"]
    out = {"experiment": "detection", "arch": arch, "dataset": p.dataset, "bits": bits, "seed": seed,
           "settings": ctx.settings(arch), "search_images": len(ctx.search), "test_images": len(ctx.test),
           **_metrics(fp32["search"], "fp32_search"), **_metrics(fp32["test"], "fp32_test"),
           "rtn_rule": rtn["rule"], **_metrics(rtn["search"], "rtn_search"), **_metrics(rtn["test"], "rtn_test"),
           "num_weights": rtn_state.num_weights}
    drop = fp32["search"]["map"] - rtn["search"]["map"]
    if drop < p.min_drop:
        out.update(es_run=False, es_skipped_reason=f"RTN is within {100 * p.min_drop:.1f} points of FP32 "
                                                    f"search mAP@[.5:.95] ({100 * drop:+.2f})")
        return out
    ck = Path(checkpoint_dir) if checkpoint_dir is not None else None
    stem = f"detection-{arch}-W{bits}-seed{seed}"
    ck_local = ck / f"{stem}-local.pt" if ck else None
    ck_global = ck / f"{stem}-global.pt" if ck else None
    if p.local_evaluations > 0:
        local_codes, local_log, local_seconds = local_stage(
            fmodel, rtn_state, ctx.search, evaluations=p.local_evaluations, lam=p.lam, p=p.p,
            local_moves=p.local_moves, samples=p.local_samples, seed=seed, checkpoint=ck_local,
            threads=1 if ctx.device.type == "cpu" else None)
    else:  # no local stage: the global ES starts from the rounding baseline
        local_codes, local_log, local_seconds = rtn_state.codes(), [], 0.0
    # held-out mAP is measured once, at the end (decoding + matching cost more than the ES evaluations)
    result, start_eval, setup_seconds = global_stage(
        fmodel, rtn_state, ctx.search, local_codes, budget=p.budget, lam=p.lam, p=p.p, seed=seed,
        loss=detection_loss, metric=None, report=None, checkpoint=ck_global)
    es_state = result.state(rtn_state)
    es_model = es_state.to_model(fmodel)
    es_search, es_test = evaluate_detector(es_model, ctx.search), evaluate_detector(es_model, ctx.test)
    gap50 = fp32["test"]["map50"] - rtn["test"]["map50"]
    gap = fp32["test"]["map"] - rtn["test"]["map"]
    out.update(
        es_run=True, local_search_loss=start_eval.fitness,
        local_evaluations=sum(e["evaluations"] for e in local_log), local_seconds=local_seconds,
        local_log=[{k: e[k] for k in ("layer", "before", "after", "evaluations")} for e in local_log],
        **_metrics(es_search, "es_search"), **_metrics(es_test, "es_test"),
        gain_map50=es_test["map50"] - rtn["test"]["map50"], gain_map=es_test["map"] - rtn["test"]["map"],
        gap_recovered_map50=(es_test["map50"] - rtn["test"]["map50"]) / gap50 if gap50 > 0 else None,
        gap_recovered_map=(es_test["map"] - rtn["test"]["map"]) / gap if gap > 0 else None,
        global_evaluations=result.evaluations, global_seconds=result.seconds + setup_seconds,
        wall_seconds=local_seconds + result.seconds + setup_seconds,
        history=[{k: h[k] for k in ("evaluations", "best", "mean", "complete")} for h in result.history],
        moved=moved_analysis(rtn_state, es_state, None))
    if keep_codes:
        out["_codes"] = {n: lq.codes.clone() for n, lq in es_state.layers.items()}
    for f in (ck_local, ck_global):
        if f is not None and f.exists():
            f.unlink()
    return out


def run_fitness_comparison(ctx: DetectionContext, arch: str, bits: int, seed: int, budget: int) -> dict:
    """The global ES from the RTN codes with two fitnesses at equal budget: the per-image detection loss
    (with paired early rejection) and ``1 - mAP@0.5`` of the search split (:func:`map_fitness`; no
    per-image values, so no early rejection). Held-out mAP of both results, time, accepted generations."""
    from .experiments import global_stage
    fmodel, _ = ctx.model(arch)
    rtn = ctx.rtn(arch, bits)
    out = {"arch": arch, "bits": bits, "seed": seed, "budget": budget,
           "rtn_test_map50": rtn["test"]["map50"], "rtn_test_map": rtn["test"]["map"],
           "rtn_search_map50": rtn["search"]["map50"]}
    for name, loss, early in (("loss", detection_loss, True), ("map", map_fitness, False)):
        t0 = time.perf_counter()
        result, _, _ = global_stage(fmodel, rtn["state"], ctx.search, rtn["state"].codes(), budget=budget,
                                    lam=ctx.profile.lam, p=ctx.profile.p, seed=seed, loss=loss, metric=None,
                                    early_reject=early)
        seconds = time.perf_counter() - t0
        model = result.state(rtn["state"]).to_model(fmodel)
        search, test = evaluate_detector(model, ctx.search), evaluate_detector(model, ctx.test)
        out[name] = {"seconds": seconds, "evaluations": result.evaluations,
                     "accepted": sum(h["accepted"] for h in result.history), "generations": len(result.history),
                     **_metrics(search, "search"), **_metrics(test, "test"),
                     "curve": [h["best"] for h in result.history]}
    return out


def _codes_file(out: Path, arch: str, bits: int, seed: int) -> Path:
    return out / "codes" / f"{arch}-W{bits}-seed{seed}.pt"


def es_model(ctx: DetectionContext, arch: str, bits: int, seed: int, out=None) -> nn.Module:
    """The float detector decoding the ES codes of cell (arch, bits, seed): from this session
    (``ctx.es_codes``) or from the ``out/codes`` folder of an earlier run."""
    codes = ctx.es_codes.get((arch, bits, seed))
    if codes is None:
        if out is None:
            raise ValueError(f"No ES codes of {arch} W{bits} seed {seed} in this session; pass the run's folder.")
        codes = torch.load(_codes_file(Path(out), arch, bits, seed), weights_only=True)
    fmodel, _ = ctx.model(arch)
    return ctx.rtn(arch, bits)["state"].with_codes(codes).to_model(fmodel)


def summarize(cells: dict) -> list[dict]:
    """One row per (detector, bits): FP32, RTN and the seed mean ± sample std of the ES numbers."""
    from .experiments import mean_std
    groups: dict = {}
    for c in cells.values():
        if c.get("experiment") == "detection":
            groups.setdefault((c["arch"], c["bits"]), []).append(c)
    order = list(ARCHITECTURES)
    rows = []
    for (arch, bits), cs in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order
                                                                   else 99, kv[0][1])):
        cs = sorted(cs, key=lambda c: c["seed"])
        c0 = cs[0]
        row = {"arch": arch, "bits": bits, "seeds": [c["seed"] for c in cs], "rtn_rule": c0["rtn_rule"],
               "es_run": all(c["es_run"] for c in cs)}
        for k in ("fp32_test_map50", "fp32_test_map", "fp32_search_map50", "fp32_search_map", "rtn_test_map50",
                  "rtn_test_map", "rtn_search_map50", "rtn_search_map"):
            row[k] = c0[k]
        if row["es_run"]:
            for k in ("es_test_map50", "es_test_map", "es_search_map50", "es_search_map", "gain_map50",
                      "gain_map", "wall_seconds", "local_evaluations", "global_evaluations"):
                row[k], row[k + "_std"] = mean_std(c[k] for c in cs)
            row["moved_share"], row["moved_share_std"] = mean_std(c["moved"]["share"] for c in cs)
            for k in ("gap_recovered_map50", "gap_recovered_map"):
                gaps = [c[k] for c in cs if c[k] is not None]
                row[k] = mean_std(gaps)[0] if gaps else None
            row["es_map_above_rtn_every_seed"] = all(c["es_test_map"] > c["rtn_test_map"] for c in cs)
            row["es_map50_above_rtn_every_seed"] = all(c["es_test_map50"] > c["rtn_test_map50"] for c in cs)
        rows.append(row)
    return rows


def _pct(x, std=None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def markdown_table(rows: list[dict], timing: bool = True) -> str:
    """The held-out table in Markdown: mAP in %, ES as mean ± sample std over seeds."""
    head = ["detector", "bits", "FP32 mAP@0.5", "FP32 mAP@[.5:.95]", "RTN rule", "RTN mAP@0.5",
            "RTN mAP@[.5:.95]", "ES mAP@0.5", "ES mAP@[.5:.95]", "ES - RTN mAP@[.5:.95] (points)",
            "RTN -> ES search mAP@[.5:.95]", "weights moved"] + (["wall time (s)"] if timing else []) + ["seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["arch"], f"W{r['bits']}", _pct(r["fp32_test_map50"]), _pct(r["fp32_test_map"]), r["rtn_rule"],
                 _pct(r["rtn_test_map50"]), _pct(r["rtn_test_map"])]
        if r["es_run"]:
            cells += [_pct(r["es_test_map50"], r["es_test_map50_std"]), _pct(r["es_test_map"], r["es_test_map_std"]),
                      f"{100 * r['gain_map']:+.1f} ± {100 * r['gain_map_std']:.1f}",
                      f"{_pct(r['rtn_search_map'])} -> {_pct(r['es_search_map'], r['es_search_map_std'])}",
                      f"{100 * r['moved_share']:.2f}%"]
            cells += [f"{r['wall_seconds']:.0f}"] if timing else []
        else:
            cells += ["(not run: RTN ~ FP32)", "-", "-", "-", "-"] + (["-"] if timing else [])
        cells.append(",".join(str(s) for s in r["seeds"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize_comparison(comparisons: list[dict]) -> dict | None:
    """Seed means of the fitness comparison: ``{"loss": {...}, "map": {...}, "arch", "bits", "seeds"}``."""
    from .experiments import mean_std
    if not comparisons:
        return None
    out = {"arch": comparisons[0]["arch"], "bits": comparisons[0]["bits"], "budget": comparisons[0]["budget"],
           "seeds": [c["seed"] for c in comparisons], "rtn_test_map50": comparisons[0]["rtn_test_map50"],
           "rtn_test_map": comparisons[0]["rtn_test_map"]}
    for name in ("loss", "map"):
        out[name] = {}
        for k in ("test_map50", "test_map", "search_map50", "seconds", "accepted"):
            out[name][k], out[name][k + "_std"] = mean_std(c[name][k] for c in comparisons)
    return out


def results_markdown(results: dict, timing: bool = True) -> str:
    """The ``results.md`` section: ``## Detection``, the held-out table, how it was made, the fitness comparison."""
    p = results["profile"]
    lines = ["## Detection", "",
             f"Profile `{p['name']}`: generated `{p['dataset']}` canvases ({results.get('canvas', 64)}x"
             f"{results.get('canvas', 64)}, 1-3 {results.get('glyph_source', 'glyph')} glyphs each, boxes tight "
             f"around the glyph pixels); search split {p['search_size']} canvases of training glyphs never trained "
             f"on (the ES fitness set); held-out test {p['test_size']} canvases of the official test glyphs "
             "(reported only). mAP by torchmetrics (COCO-style, in %), ES as mean ± sample std over the seeds. "
             "RTN = nearest rounding per channel with the scale rule of lowest search-split detection loss. "
             + (f"ES = local layer-wise ES ({p['local_evaluations']} evaluations per layer on the layer-output MSE "
                f"of {p['local_samples']} canvases) then global " if p["local_evaluations"] else "ES = global ")
             + f"(1+{p['lam']}) ES from RTN ({p['budget']} evaluations on the per-image detection loss of the "
             "search split). Weights moved = share of codes that differ from RTN.",
             "", markdown_table(results["summary"], timing), ""]
    comp = results.get("comparison")
    if comp:
        lo, ma = comp["loss"], comp["map"]
        lines += [f"Fitness comparison ({comp['arch']} W{comp['bits']}, global ES from RTN, {comp['budget']} "
                  f"evaluations, seeds {','.join(map(str, comp['seeds']))}): held-out mAP@0.5 / mAP@[.5:.95] "
                  f"{_pct(comp['rtn_test_map50'])} / {_pct(comp['rtn_test_map'])} (RTN) -> "
                  f"{_pct(lo['test_map50'])} / {_pct(lo['test_map'])} with the per-image detection loss as fitness "
                  f"({lo['seconds']:.0f} s, {lo['accepted']:.1f} accepted generations) and {_pct(ma['test_map50'])} / "
                  f"{_pct(ma['test_map'])} with 1 - mAP@0.5 of the search split as fitness ({ma['seconds']:.0f} s, "
                  f"{ma['accepted']:.1f} accepted generations). The experiment uses the loss: it changes with every "
                  "small change of the outputs where mAP sits on plateaus, it needs no decoding and matching, and "
                  "it has a value per image, which the evaluator's paired early rejection needs (on search splits "
                  "of more than one 256-image chunk).", ""]
    for f in results.get("figures", []):
        lines.append(f"![{f.removesuffix('.png').replace('_', ' ')}]({f})")
    return "\n".join(lines) + "\n"


def write_figures(results: dict, ctx: DetectionContext, out: Path) -> list[str]:
    """The figures of a run, written into ``out``; returns their file names."""
    import matplotlib.pyplot as plt
    from . import detection_plots as dp
    names = []

    def save(fig, name):
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)

    save(dp.plot_samples(ctx.test, ctx.splits.classes, n=8), "detection_samples.png")
    rows = results["summary"]
    if rows:
        save(dp.plot_map_vs_bits(rows), "detection_map_vs_bits.png")
    es_bits = sorted({r["bits"] for r in rows if r["es_run"]})
    if es_bits:
        b = es_bits[0]
        save(dp.plot_moved(results["cells"], b), f"detection_W{b}_moved.png")
        seed = results["profile"]["seeds"][0]
        archs = [r["arch"] for r in rows if r["es_run"] and r["bits"] == b]
        preds, idx = {}, list(range(4))
        for arch in archs:
            fmodel, _ = ctx.model(arch)
            short = arch.removeprefix("det_").removesuffix("_small")
            x = ctx.test.x[:len(idx)]
            preds[f"{short} FP32"] = predict(fmodel, x)
            preds[f"{short} RTN W{b}"] = predict(ctx.rtn(arch, b)["state"].to_model(fmodel), x)
            preds[f"{short} ES W{b}"] = predict(es_model(ctx, arch, b, seed, out), x)
        save(dp.plot_before_after(ctx.test, preds, idx, ctx.splits.classes), f"detection_W{b}_boxes.png")
    if results.get("comparisons"):
        save(dp.plot_fitness_comparison(results["comparisons"]), "detection_fitness_comparison.png")
    return names


def reproduce_task(profile="fast", out="results/detection", progress: bool = True, device=None,
                   download: bool = False, figures: bool = True, checkpoint_dir=None, **overrides) -> dict:
    """Run the detection experiment headless: a resumable grid of (detector, bits, seed) cells, then the
    fitness comparison (mAP vs loss) at the lowest bit width with an ES run.

    Writes ``out/results.json`` (every number; rewritten atomically after each cell, so a second call
    reuses the finished cells with equal settings and an interrupted cell resumes from its ES checkpoints
    in ``out/checkpoints``), ``out/results.md`` (the ``## Detection`` section) and the figures, and
    saves the ES codes of every cell in ``out/codes``. ``overrides``: fields of
    :class:`DetectionProfile` (``bits``, ``seeds``, ``budget``, ``search_size``, ``test_size``,
    ``local_evaluations``, ``min_drop``, ``train_epochs``, ...; None keeps the profile's value; an
    unknown name raises ValueError). Returns the results dict.
    """
    from .experiments import _atomic_write_text
    prof = profile if isinstance(profile, DetectionProfile) else get_profile(profile)
    prof = prof.with_overrides(**overrides)
    ctx = DetectionContext(prof, device=device, checkpoint_dir=checkpoint_dir, download=download)
    out = Path(out)
    results = run_task(ctx, out, progress=progress, figures=figures)
    _atomic_write_text(out / "results.md", results_markdown(results))
    return results


def run_task(ctx: DetectionContext, out=None, progress: bool = True, figures: bool = False) -> dict:
    """The grid of (detector, bits, seed) cells and the fitness comparison for ``ctx``'s profile.

    With ``out``: resumable (``out/results.json`` rewritten after each cell, ES checkpoints in
    ``out/checkpoints``, evolved codes in ``out/codes``) and, with ``figures``, the figures written
    there. Without: everything stays in memory (the notebook's way). Returns the results dict."""
    from .experiments import _atomic_write_text, _jsonable, run_cells
    prof = ctx.profile
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    ck = out / "checkpoints" if out is not None else None
    out_json = out / "results.json" if out is not None else None
    header = {"version": 1, "task": "detection", "profile": _jsonable(asdict(prof))}
    t0 = time.perf_counter()
    jobs = [(f"detection/{arch}/W{b}/seed{s}", ctx.settings(arch),
             lambda a=arch, b=b, s=s: _cell_with_codes(ctx, a, b, s, out, ck))
            for arch in prof.models for b in prof.bits for s in prof.seeds]
    cells, reused = run_cells(jobs, out_json, header, progress, desc="detection")
    summary = summarize(cells)
    comparisons = {}
    es_bits = sorted({r["bits"] for r in summary if r["es_run"] and r["arch"] == prof.compare_model})
    if prof.compare_budget and es_bits:
        b = es_bits[0]
        settings = {**ctx.settings(prof.compare_model), "compare_budget": prof.compare_budget}
        cjobs = [(f"fitness/{prof.compare_model}/W{b}/seed{s}", settings,
                  lambda s=s: {"settings": settings, **run_fitness_comparison(ctx, prof.compare_model, b, s,
                                                                              prof.compare_budget)})
                 for s in prof.compare_seeds]
        comparisons, r2 = run_cells(cjobs, out_json, header, progress, desc="fitness comparison")
        reused += r2
    results = {**header, "cells": cells, "summary": summary, "comparisons": list(comparisons.values()),
               "comparison": summarize_comparison(list(comparisons.values())), "canvas": ctx.splits.canvas,
               "glyph_source": ctx.splits.glyph_source, "search_images": len(ctx.search),
               "test_images": len(ctx.test), "cells_reused": reused,
               "seconds_this_run": time.perf_counter() - t0}
    results["figures"] = write_figures(results, ctx, out) if figures and out is not None else []
    results = _jsonable(results)
    if out is not None:
        # the JSON keeps every finished cell (also those of other settings), as run_cells does
        every = {**json.loads(out_json.read_text()).get("cells", {}), **results["cells"], **_jsonable(comparisons)}
        _atomic_write_text(out_json, json.dumps({**results, "cells": every}, indent=1))
    return results


def _cell_with_codes(ctx: DetectionContext, arch: str, bits: int, seed: int, out: Path | None, ck) -> dict:
    """Run one cell; keep its evolved codes in ``ctx.es_codes`` and (with ``out``) in ``out/codes``."""
    from .experiments import _atomic_torch_save
    c = run_detection_cell(ctx, arch, bits, seed, checkpoint_dir=ck, keep_codes=True)
    codes = c.pop("_codes", None)
    if codes is not None:
        ctx.es_codes[(arch, bits, seed)] = codes
        if out is not None:
            _atomic_torch_save(codes, _codes_file(out, arch, bits, seed))
    return c
