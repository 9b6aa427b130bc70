"""DCGAN generator and discriminator (Radford et al. 2016), in the PyTorch-tutorial layout the seeds used.

The layout is a stack of stride-2 (transposed) convolutions between a small base grid and the image: a 4 px
base serves 16, 32, 64, 128 px, a 7 px base serves 28 px (MNIST). Channel widths halve on the way up in the
generator and double on the way down in the discriminator. An optional label embedding makes both
class-conditional (the generator concatenates it to z, the discriminator reads it as an extra image plane).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def base_grid(resolution: int) -> tuple[int, int]:
    """(base size, number of 2x up-samplings) for a resolution, or ValueError if DCGAN cannot make it."""
    for base in (4, 7):
        k = math.log2(resolution / base) if resolution >= base else -1
        if k >= 1 and k == int(k):
            return base, int(k)
    raise ValueError(f"DCGAN makes 4*2^k or 7*2^k px images (e.g. 28, 32, 64), not {resolution}")


def init_dcgan_weights(module: nn.Module) -> None:
    """N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales, as in the paper."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, resolution: int, base_channels: int = 64,
                 num_classes: int = 0, label_dim: int = 50):
        super().__init__()
        base, k = base_grid(resolution)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.label_embedding = nn.Embedding(num_classes, label_dim) if num_classes else None
        in_dim = latent_dim + (label_dim if num_classes else 0)
        width = base_channels * 2 ** (k - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_dim, width, base, 1, 0, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(k - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """Returns one logit per image (higher = more real)."""

    def __init__(self, channels: int, resolution: int, base_channels: int = 64, num_classes: int = 0):
        super().__init__()
        base, k = base_grid(resolution)
        self.resolution = resolution
        self.label_plane = nn.Embedding(num_classes, resolution * resolution) if num_classes else None
        in_ch = channels + (1 if num_classes else 0)
        width = base_channels
        layers: list[nn.Module] = [nn.Conv2d(in_ch, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(k - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, base, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)
        self.feature_dim = width

    def _with_label_plane(self, x: Tensor, labels: Tensor | None) -> Tensor:
        if self.label_plane is not None:
            plane = self.label_plane(labels).view(-1, 1, self.resolution, self.resolution)
            x = torch.cat([x, plane], dim=1)
        return x

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(self._with_label_plane(x, labels)).flatten()

    def features_and_logit(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(last feature map averaged over its base grid (B, feature_dim), logit (B,)): for projection
        conditioning (``TimeConditionedDiscriminator``)."""
        h = self.net[:-1](self._with_label_plane(x, labels))
        return h.mean(dim=(2, 3)), self.net[-1](h).flatten()
