"""Minibatch standard deviation (Karras et al. 2018, "Progressive Growing of GANs"), shared by the StyleGAN2
discriminator and the few-step hybrids' time-conditioned discriminator: a feature map that tells the
discriminator how varied a group of samples is, so a generator that collapses onto one image is caught."""

from __future__ import annotations

import torch
from torch import Tensor


def minibatch_stddev(x: Tensor, group_size: int = 4, num_features: int = 1) -> Tensor:
    """Karras et al. 2018: per group of ``group_size`` samples, the standard deviation of every feature over
    the group, averaged over channels (in ``num_features`` slices) and pixels, appended as extra feature maps.
    The group size shrinks to a divisor of the batch when it does not divide it."""
    b, c, h, w = x.shape
    g = min(group_size, b)
    while b % g:
        g -= 1
    f = num_features
    y = x.reshape(g, -1, f, c // f, h, w)                 # [G, B/G, F, C/F, H, W]
    y = (y - y.mean(dim=0)).square().mean(dim=0)          # variance over the group
    y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))             # [B/G, F]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)         # [B, F, H, W]
    return torch.cat([x, y], dim=1)
