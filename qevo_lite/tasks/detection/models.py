"""The two small single-shot detectors (CenterNet-style): a VGG-style and a ResNet-style backbone with
one shared head. (N, C, H, W) -> (N, K + 4, H / 4, W / 4): K class-heatmap logits, then box width and height
(grid cells) and the sub-cell offset of the centre (see :mod:`qevo_lite.tasks.detection.targets`)."""
from __future__ import annotations

import torch
from torch import nn

from ...core.models import BasicBlock, conv_bn_relu


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


def build_model(arch: str, entry: dict | None = None) -> nn.Module:
    """A fresh detector ``arch`` shaped as the manifest ``entry`` says (``in_channels``, ``num_classes``)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown detector {arch!r}; choose one of {sorted(ARCHITECTURES)}.")
    entry = entry or {}
    return ARCHITECTURES[arch](entry.get("in_channels", 1), entry.get("num_classes", 10))
