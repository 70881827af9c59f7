"""A generated object-detection dataset made of real glyphs, in torchvision's target format.

No dataset with boxes is available offline, so we make one: real glyphs (Fashion-MNIST items, or
scikit-learn's digits when Fashion-MNIST is not installed) are scaled and pasted at random,
non-overlapping positions on a black canvas (64x64 by default). Each glyph becomes one object:

* its box is **tight around the glyph's nonzero pixels after scaling** (pixel edges, so a glyph that
  covers columns 3..10 has ``x1 = 3, x2 = 11``), in ``xyxy`` pixel coordinates;
* its label is the glyph's class (0..9).

Targets follow torchvision's detection format: one dict per image with ``boxes`` (float32 (k, 4),
xyxy, pixels) and ``labels`` (int64 (k,)).

Splits (as for the classifiers, see DESIGN.md):

* ``train`` canvases are made of training glyphs (pretraining only);
* ``search`` canvases (the ES fitness set) are made of *other* training glyphs, never trained on;
* ``test`` canvases are made of the official test glyphs only.

Everything is drawn from a seeded generator: the same seed gives the same canvases.

The real-data path for users with internet is Pascal VOC through torchvision
(:func:`load_voc`, full profile); it is not runnable offline and says so.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ...core.data import DatasetUnavailable, Split, default_root, load_arrays
from .targets import encode_targets

CANVAS = 64
TRAIN_CANVASES = 6000   # training canvases of the committed checkpoints
TEST_CANVASES = 1000    # held-out canvases of the FP32 mAP in the manifest
STRIDE = 4          # output grid stride of the detectors (64x64 canvas -> 16x16 grid)
MIN_PIXEL = 8       # scaled glyph pixels below this (of 255) are set to 0: the faint resampling halo
GLYPH_SOURCES = ("fashion_mnist", "digits")


@dataclass
class DetectionSplit(Split):
    """One detection split.

    Attributes:
        x: float32 images (N, 1, H, W) in [0, 1].
        y: the dense training targets (N, K + 5, H / stride, W / stride) made by
            :func:`qevo_lite.tasks.detection.encode_targets` (what the ES evaluator slices per chunk).
        targets: torchvision-format targets, one ``{"boxes": (k, 4) float xyxy, "labels": (k,) int64}``
            per image (what the mAP is computed against).
    """

    targets: list = field(default_factory=list)

    def subset(self, n: int) -> "DetectionSplit":
        return DetectionSplit(self.x[:n], self.y[:n], self.targets[:n])


@dataclass
class DetectionSplits:
    """The three splits plus what a detector needs to know about them."""

    name: str
    glyph_source: str
    train: DetectionSplit
    search: DetectionSplit
    test: DetectionSplit
    classes: tuple
    canvas: int
    train_glyphs: torch.Tensor | None = None   # indices into the official training glyphs
    search_glyphs: torch.Tensor | None = None  # indices into the official training glyphs (disjoint)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_glyphs(source: str = "auto", root=None):
    """Raw glyphs ``(x_train, y_train, x_test, y_test, classes, source)`` as uint8 (N, 1, 28, 28).

    ``source``: ``fashion_mnist``, ``digits`` or ``auto`` (Fashion-MNIST, and the digits with a
    warning when Fashion-MNIST is not installed).
    """
    if source not in GLYPH_SOURCES + ("auto",):
        raise ValueError(f"Unknown glyph source {source!r}; choose one of {GLYPH_SOURCES} or 'auto'.")
    if source == "auto":
        try:
            return (*load_arrays("fashion_mnist", root), "fashion_mnist")
        except DatasetUnavailable:
            warnings.warn("Fashion-MNIST is not installed: the detection canvases use scikit-learn's digits "
                          "instead (install dataset-fashion-mnist for the committed results).", stacklevel=2)
            source = "digits"
    return (*load_arrays(source, root), source)


def _scaled(glyph: torch.Tensor, size: int) -> torch.Tensor:
    """A uint8 (1, 28, 28) glyph resized to (size, size), faint pixels (< MIN_PIXEL) set to 0."""
    g = F.interpolate(glyph[None].float(), size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)[0]
    g = g.round().clamp(0, 255)
    return torch.where(g >= MIN_PIXEL, g, torch.zeros_like(g)).to(torch.uint8)


def tight_box(patch: torch.Tensor) -> tuple[int, int, int, int] | None:
    """``(x1, y1, x2, y2)`` around the nonzero pixels of a (1, h, w) patch (pixel edges), or None."""
    nz = patch[0].nonzero()
    if len(nz) == 0:
        return None
    (y1, x1), (y2, x2) = nz.min(0).values.tolist(), nz.max(0).values.tolist()
    return x1, y1, x2 + 1, y2 + 1


def make_canvases(glyphs: torch.Tensor, labels: torch.Tensor, n: int, canvas: int = CANVAS,
                  objects: tuple = (1, 3), scale: tuple = (14, 30), seed: int = 0,
                  stride: int = STRIDE, tries: int = 30) -> tuple[torch.Tensor, list]:
    """Paste glyphs on ``n`` black canvases.

    Args:
        glyphs: uint8 (M, 1, 28, 28); the glyphs are used in a seeded random order (each once before any
            is reused).
        labels: int64 (M,).
        n: number of canvases.
        canvas: canvas side (pixels).
        objects: (min, max) objects per canvas, inclusive.
        scale: (min, max) side of a scaled glyph in pixels, inclusive.
        seed: seeds every random choice.
        stride: the detector's grid stride: two objects never have their box centre in the same grid cell.
        tries: placements tried per object before it is dropped (every canvas keeps at least one).
    Returns:
        ``(images uint8 (n, 1, canvas, canvas), targets)``, targets in torchvision's format.
    """
    if len(glyphs) == 0:
        raise ValueError("No glyphs to paste.")
    if not (1 <= objects[0] <= objects[1]) or not (4 <= scale[0] <= scale[1] <= canvas):
        raise ValueError(f"Bad objects={objects} or scale={scale} for a {canvas}-pixel canvas.")
    g = torch.Generator().manual_seed(seed)
    order, pos = torch.randperm(len(glyphs), generator=g), 0
    images = torch.zeros(n, 1, canvas, canvas, dtype=torch.uint8)
    targets = []
    for i in range(n):
        k = int(torch.randint(objects[0], objects[1] + 1, (1,), generator=g))
        rects, boxes, labs, cells = [], [], [], set()
        for _ in range(k):
            if pos == len(order):
                order, pos = torch.randperm(len(glyphs), generator=g), 0
            j = int(order[pos])
            pos += 1
            s = int(torch.randint(scale[0], scale[1] + 1, (1,), generator=g))
            patch = _scaled(glyphs[j], s)
            box = tight_box(patch)
            if box is None:
                continue
            for _ in range(tries):
                x0, y0 = (int(v) for v in torch.randint(0, canvas - s + 1, (2,), generator=g))
                # the patches (hence the tight boxes inside them) must not overlap
                if any(x0 < r[2] and r[0] < x0 + s and y0 < r[3] and r[1] < y0 + s for r in rects):
                    continue
                b = (x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3])
                cell = (int((b[0] + b[2]) / 2 // stride), int((b[1] + b[3]) / 2 // stride))
                if cell in cells:
                    continue
                region = images[i, :, y0:y0 + s, x0:x0 + s]
                torch.maximum(region, patch, out=region)
                rects.append((x0, y0, x0 + s, y0 + s))
                boxes.append(b)
                labs.append(int(labels[j]))
                cells.add(cell)
                break
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.tensor(labs, dtype=torch.int64)})
    return images, targets


def load_detection_splits(train_size: int = 6000, search_size: int = 256, test_size: int = 1000,
                          seed: int = 0, canvas: int = CANVAS, glyphs: str = "auto", root=None,
                          download: bool | None = None) -> DetectionSplits:
    """The generated ``glyph_boxes`` dataset as train / search / test canvases.

    The official training glyphs are shuffled with ``seed``; the first third goes to the search
    canvases, the rest to the train canvases (disjoint glyphs). Test canvases use the official test
    glyphs only. Images are float32 in [0, 1]; ``y`` holds the dense targets of the detectors
    (:func:`qevo_lite.tasks.detection.encode_targets`).
    """
    del download  # the glyphs are offline; kept for a uniform signature
    x_tr, y_tr, x_te, y_te, classes, source = load_glyphs(glyphs, root)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y_tr), generator=g)
    cut = len(perm) // 3
    search_idx, train_idx = perm[:cut], perm[cut:]

    def split(xg, yg, n, s):
        imgs, targets = make_canvases(xg, yg, n, canvas=canvas, seed=s)
        x = imgs.float().div(255.0)
        return DetectionSplit(x, encode_targets(targets, len(classes), canvas), targets)

    return DetectionSplits(
        name="glyph_boxes", glyph_source=source,
        train=split(x_tr[train_idx], y_tr[train_idx], train_size, seed * 1000 + 1),
        search=split(x_tr[search_idx], y_tr[search_idx], search_size, seed * 1000 + 2),
        test=split(x_te, y_te, test_size, 7919),  # fixed: the held-out canvases never move
        classes=tuple(classes), canvas=canvas, train_glyphs=train_idx, search_glyphs=search_idx)


def load_voc(root=None, year: str = "2012", download: bool | None = None):
    """Pascal VOC detection through torchvision (the full profile's real data; needs internet once).

    Returns torchvision's ``VOCDetection`` train and val datasets. Offline and without the files this
    raises :class:`~qevo_lite.core.data.DatasetUnavailable` saying how to get them.
    """
    from torchvision.datasets import VOCDetection
    root = str(root or default_root())
    try:
        return (VOCDetection(root, year=year, image_set="train", download=download),
                VOCDetection(root, year=year, image_set="val", download=download))
    except (RuntimeError, OSError) as exc:
        raise DatasetUnavailable(
            f"Pascal VOC {year} is not in {root} (about 2 GB). With internet run\n"
            "  qevo reproduce --experiment detection --profile full --download\n"
            "or use the generated glyph_boxes dataset (fast profile), which needs no download.") from exc


# ----------------------------------------------------------------------------- the task's datasets
# dataset name -> glyph source of the generated canvases ("auto": Fashion-MNIST, else the digits)
DATASETS = {"glyph_boxes": "auto", "glyph_boxes_digits": "digits"}
_SPLITS_CACHE: dict = {}


def load_dataset(dataset: str = "glyph_boxes", seed: int = 0, train_size: int = TRAIN_CANVASES,
                 search_size: int = 256, test_size: int = 1000, download: bool | None = None):
    """The detection splits of ``dataset`` (cached per arguments).

    ``glyph_boxes``: generated canvases of Fashion-MNIST glyphs (digits when Fashion-MNIST is missing,
    with a warning); ``glyph_boxes_digits``: of scikit-learn digits; ``voc``: Pascal VOC (full profile,
    needs the files or ``download=True``; not converted into canvases by this package)."""
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
