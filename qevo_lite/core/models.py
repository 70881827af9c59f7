"""The classifiers: small VGG- and ResNet-style networks for the fast profile and
VGG-11 / ResNet-20 for the full (CIFAR-10) profile.

All take images (N, C, H, W) with H, W in 8..64 (global average pooling makes
them size-agnostic) and return logits (N, num_classes).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) -> batch-norm -> ReLU, the unit that BN folding turns into one conv."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class VGG(nn.Module):
    """VGG-style: stages of 3x3 conv-BN-ReLU blocks separated by 2x2 max-pooling, then a linear head.

    ``config`` lists channel counts, with ``"M"`` for a max-pool, e.g. ``(16, 16, "M", 32, ...)``.
    """

    def __init__(self, config, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        layers, c = [], in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(conv_bn_relu(c, v))
                c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity (or 1x1 conv-BN) shortcut, ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: a 3x3 stem, three stages of basic blocks (stride 1, 2, 2), linear head."""

    def __init__(self, widths=(16, 32, 64), blocks_per_stage: int = 1, in_channels: int = 1,
                 num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn_relu(in_channels, widths[0])
        stages, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks = [BasicBlock(c, w, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(w, w) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            c = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


# name -> (constructor, what it is)
ARCHITECTURES = {
    "vgg_small": (lambda c, k: VGG((16, 16, "M", 32, 32, "M", 64, 64), c, k),
                  "6 conv layers (16-32-64 channels) + linear, ~75k weights; fast profile"),
    "resnet_small": (lambda c, k: ResNet((16, 32, 64), 1, c, k),
                     "stem + 3 basic blocks (16-32-64 channels) + linear, ~78k weights; fast profile"),
    "vgg11": (lambda c, k: VGG((64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512), c, k),
              "VGG-11 with batch-norm for 32x32 inputs, ~9.2M weights; full profile"),
    "resnet20": (lambda c, k: ResNet((16, 32, 64), 3, c, k),
                 "ResNet-20 (He et al. 2016, CIFAR variant), ~0.27M weights; full profile"),
}


def build_model(name: str, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """A freshly initialised classifier by name (see :data:`ARCHITECTURES`)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[name][0](in_channels, num_classes)
