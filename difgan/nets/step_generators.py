"""Generators of the models that generate in a few steps, as thin heads on a time-conditioned backbone
(the suite's UNet, ``forward(x, t, labels=None, cond=None)``):

- ``StepGenerator`` (DifGAN): z_{k-1} = G(z_k, k[, u]), the backbone's output through tanh on the final step
  (an image in [-1, 1]) and, with ``squash_all``, on every step (intermediates judged against clean images);
  an optional per-step latent u enters through the backbone's conditioning input, as DDGAN's z does;
- ``X0Generator`` (DDGAN): x_0 = G(x_t, z, t), tanh of the backbone's output, with the latent z reaching every
  block through the backbone's conditioning input (``cond_dim``).

Timesteps are 0-based: index t is the step that leaves level t + 1 (t = 0 produces the image).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class StepGenerator(nn.Module):
    def __init__(self, backbone: nn.Module, squash_all: bool = True):
        super().__init__()
        self.backbone, self.squash_all = backbone, bool(squash_all)

    def forward(self, z: Tensor, t: Tensor, u: Tensor | None = None) -> Tensor:
        h = self.backbone(z, t) if u is None else self.backbone(z, t, cond=u)
        if self.squash_all:
            return torch.tanh(h)
        final = (t == 0).reshape(-1, *([1] * (h.ndim - 1)))
        return torch.where(final, torch.tanh(h), h)


class X0Generator(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x_t: Tensor, t: Tensor, z: Tensor) -> Tensor:
        return torch.tanh(self.backbone(x_t, t, cond=z))
