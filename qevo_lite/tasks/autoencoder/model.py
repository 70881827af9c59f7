"""The small convolutional autoencoder of the anomaly-detection experiment."""
from __future__ import annotations

from torch import nn

ARCH = "conv_autoencoder"
LATENT_DIM = 24


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) -> batch-norm -> ReLU (not in place, unlike the classifiers' unit, so the
    committed checkpoint's outputs stay bit-identical under the evaluators' graph caching)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class ConvAutoencoder(nn.Module):
    """A small convolutional autoencoder with a dense bottleneck.

    Encoder: 3x3 conv stride 2 (C->16, HxW -> H/2), 3x3 conv stride 2 (16->32, -> H/4), 3x3 conv
    (32->16), flatten, linear to a ``latent``-dim code. Decoder: linear back to 16 x H/4 x W/4, 3x3
    conv (16->32), nearest 2x upsampling, 3x3 conv (32->16), 2x upsampling, 3x3 conv (16->C), no output
    activation (the targets are normalised images). Only Conv2d and Linear layers carry weights
    (upsampling is ``nn.Upsample``, not a transposed conv), so the quantizer sees every weight.
    For 28x28x1 and ``latent=24``: 56,352 weights in 8 layers.

    Args:
        in_channels: image channels C.
        image_size: H = W, divisible by 4.
        latent: bottleneck dimension (small, so unseen classes reconstruct badly).
    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, latent: int = LATENT_DIM):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}.")
        s = image_size // 4
        self.encoder = nn.Sequential(conv_bn_relu(in_channels, 16, 2), conv_bn_relu(16, 32, 2),
                                     conv_bn_relu(32, 16), nn.Flatten(), nn.Linear(16 * s * s, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, 16 * s * s), nn.ReLU(), nn.Unflatten(1, (16, s, s)),
                                     conv_bn_relu(16, 32), nn.Upsample(scale_factor=2, mode="nearest"),
                                     conv_bn_relu(32, 16), nn.Upsample(scale_factor=2, mode="nearest"),
                                     nn.Conv2d(16, in_channels, 3, 1, 1))

    def forward(self, x):
        return self.decoder(self.encoder(x))


def build_model(arch: str = ARCH, entry: dict | None = None) -> nn.Module:
    """A fresh autoencoder shaped as the manifest ``entry`` says (in_channels, image_size, latent_dim)."""
    if arch != ARCH:
        raise ValueError(f"The autoencoder task builds {ARCH!r}, not {arch!r}.")
    entry = entry or {}
    return ConvAutoencoder(entry.get("in_channels", 1), entry.get("image_size", 28),
                           entry.get("latent_dim", LATENT_DIM))
