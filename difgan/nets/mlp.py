"""Fully connected generator and discriminator (Goodfellow et al. 2014's shape, as seed 003 used it):
LeakyReLU(0.2) hidden layers, dropout in the discriminator, tanh output in the generator."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


def _check_hidden(hidden: Sequence[int]) -> list[int]:
    widths = [int(h) for h in hidden]
    if not widths or min(widths) < 1:
        raise ValueError(f"hidden layer widths must be positive and at least one, got {list(hidden)}")
    return widths


class MLPGenerator(nn.Module):
    """z (B, latent_dim) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, latent_dim: int, image_shape: Sequence[int], hidden: Sequence[int] = (256, 512, 1024),
                 negative_slope: float = 0.2):
        super().__init__()
        self.latent_dim, self.image_shape = int(latent_dim), tuple(int(s) for s in image_shape)
        layers: list[nn.Module] = []
        width = self.latent_dim
        for h in _check_hidden(hidden):
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope, True)]
            width = h
        layers += [nn.Linear(width, math.prod(self.image_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(z.flatten(1)).view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    """images (B, C, H, W) -> one logit per image (higher = more real)."""

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int] = (1024, 512, 256),
                 dropout: float = 0.3, negative_slope: float = 0.2):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = math.prod(int(s) for s in image_shape)
        for h in _check_hidden(hidden):
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope, True), nn.Dropout(dropout)]
            width = h
        layers += [nn.Linear(width, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(x.flatten(1)).flatten()
