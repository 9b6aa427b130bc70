"""Adversarial losses and discriminator-input tricks: plain functions on logits and images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def discriminator_bce(real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0,
                      fake_target: float = 0.0) -> Tensor:
    """The discriminator's binary cross-entropy; targets below 1 / above 0 are (one- or two-sided) label
    smoothing (seed 004 used 0.9 and 0.1)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.full_like(fake_logits, fake_target)))


def generator_nonsaturating(fake_logits: Tensor) -> Tensor:
    """-log D(G(z)) (Goodfellow et al.'s non-saturating generator loss)."""
    return F.softplus(-fake_logits).mean()


def instance_noise(images: Tensor, std: float) -> Tensor:
    """Gaussian noise on discriminator inputs (Sønderby et al. 2016); identity when std is 0."""
    return images + std * torch.randn_like(images) if std > 0 else images


def annealed(start: float, images_seen: int, over_kimg: float) -> float:
    """``start`` decayed linearly to 0 over ``over_kimg`` thousand images (constant if over_kimg is 0)."""
    if over_kimg <= 0:
        return start
    return start * max(0.0, 1.0 - images_seen / (over_kimg * 1000.0))
