"""torchvision's models and an ImageFolder as ``qv.quantize``'s model and data (what ``qevo quantize`` runs).

* :func:`torchvision_model` builds ``"torchvision:resnet18"`` (any name of ``torchvision.models.list_models()``),
  with the pretrained weights (``weights="DEFAULT"``, downloaded by torchvision) or untrained (``weights=None``).
  A detector (``torchvision.models.detection``: RetinaNet, FCOS, SSD, SSDlite) is wrapped by
  :class:`DetectorHeadOutputs`: its backbone and head on a normalised, fixed-size batch, returning the head's
  raw outputs as one tensor, so every quantized layer is scored by its effect on what the head predicts
  (``qv.quantize``'s default loss for inputs alone: the mean squared error to the float model's outputs).
* :func:`image_folder` reads a folder of class sub-folders (ImageNet's validation layout) as a torchvision
  ``ImageFolder`` resized and centre-cropped to ``resolution`` and normalised with ImageNet's mean and std,
  the preprocessing torchvision's classifiers were trained with.
* :func:`batchnorm_statistics_from` gives untrained weights batch-norm statistics of real inputs, so that their
  activations have the scale of a trained network's (what ``qevo quantize --weights none`` does).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREFIX = "torchvision:"


class DetectorHeadOutputs(nn.Module):
    """A torchvision single-stage detector as ``images (N, 3, H, W), normalised -> (N, D)`` raw head outputs.

    The detector's ``transform`` (resizing, normalisation) and post-processing (box decoding, NMS) are left
    out: they hold no weights, and the head's class logits and box regressions are what quantization changes.
    Works for detectors with a ``backbone`` (a feature pyramid or feature extractor returning named maps) and a
    ``head`` returning a dict of tensors (RetinaNet, FCOS, SSD, SSDlite)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        if not (hasattr(detector, "backbone") and hasattr(detector, "head")):
            raise ValueError(f"{type(detector).__name__} has no backbone and head; DetectorHeadOutputs wraps "
                             "single-stage detectors (RetinaNet, FCOS, SSD, SSDlite).")
        self.backbone, self.head = detector.backbone, detector.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        features = list(features.values()) if isinstance(features, dict) else [features]
        outputs = self.head(features)
        return torch.cat([outputs[k].flatten(1) for k in sorted(outputs)], dim=1)


def torchvision_model(spec: str, weights: str | None = None, num_classes: int | None = None) -> nn.Module:
    """``"torchvision:<name>"`` (or the bare name) -> the model in eval mode.

    Args:
        spec: a torchvision model name, e.g. ``"torchvision:resnet18"``, ``"mobilenet_v2"``,
            ``"retinanet_resnet50_fpn"``.
        weights: ``None`` for untrained weights (nothing is downloaded), or a torchvision weights name such as
            ``"DEFAULT"`` (downloaded to torch's cache the first time).
        num_classes: for untrained classifiers only, another number of outputs.
    Detectors come wrapped in :class:`DetectorHeadOutputs` (their backbone untrained too when ``weights`` is
    ``None``)."""
    import torchvision
    name = spec.removeprefix(PREFIX)
    if name not in torchvision.models.list_models():
        raise ValueError(f"Unknown torchvision model {name!r}; choose one of torchvision.models.list_models(), "
                         "e.g. resnet18, resnet50, mobilenet_v2, vgg16_bn, retinanet_resnet50_fpn, ssdlite320_mobilenet_v3_large.")
    kwargs = {"weights": weights}
    if num_classes is not None:
        if weights is not None:
            raise ValueError("num_classes changes the model's last layer: use it with weights=None only.")
        kwargs["num_classes"] = num_classes
    detector = name in torchvision.models.list_models(module=torchvision.models.detection)
    if detector and weights is None:
        kwargs["weights_backbone"] = None
    model = torchvision.models.get_model(name, **kwargs)
    return (DetectorHeadOutputs(model) if detector else model).eval()


@torch.no_grad()
def batchnorm_statistics_from(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> nn.Module:
    """Set every batch-norm's running mean and variance to the statistics of ``images`` (N, C, H, W), in place.

    For untrained weights: torchvision initialises running statistics to mean 0, variance 1, and in eval mode
    an untrained MobileNet's activations then shrink layer by layer (its outputs are ~1e-10: every method's
    output error is ~0 and compares nothing). With the statistics of real inputs each layer's output has unit
    scale, as in a trained network. The other weights are not touched; the model is returned in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None    # a cumulative average over the batches
    model.train()
    for i in range(0, len(images), batch_size):
        model(images[i:i + batch_size])
    return model.eval()


def image_folder(root, resolution: int = 224, limit: int | None = None):
    """A folder of class sub-folders as a torchvision ``ImageFolder`` (RGB, resized to ``resolution / 0.875``,
    centre-cropped to ``resolution`` pixels, normalised with ImageNet's mean and std); the first ``limit``
    images of a seeded shuffle (seed 0) when given, so a small calibration set spans the classes."""
    from torchvision import datasets, transforms
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"No image folder at {root}: pass a folder of class sub-folders of images "
                                "(ImageNet's validation layout: <root>/<class>/<image>.JPEG).")
    transform = transforms.Compose([transforms.Resize(round(resolution / 0.875)), transforms.CenterCrop(resolution),
                                    transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    data = datasets.ImageFolder(str(root), transform=transform)
    if limit is not None and limit < len(data):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:limit]
        data = torch.utils.data.Subset(data, order.tolist())
    return data
