"""Exponential moving average of one network (the generator or the denoiser), never of the whole module.

The decay is stated as a half-life in images so it does not change with batch size or GPU count
(Karras et al.); a fixed per-step ``decay`` (Ho et al.'s 0.9999) is accepted for paper configs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_for_batch(batch_images: int, half_life_kimg: float | None, decay: float | None,
                    images_seen: int = 0, rampup: float | None = None) -> float:
    """The EMA decay for one update that saw ``batch_images`` images (all ranks together).

    With ``rampup`` (StyleGAN2 uses 0.05) the half-life is at most ``rampup * images_seen``, so early in
    training the average follows the network instead of holding on to its random initialisation.
    """
    if half_life_kimg is not None:
        half_life = half_life_kimg * 1000.0
        if rampup is not None:
            half_life = min(half_life, rampup * images_seen)
        return 0.5 ** (batch_images / max(half_life, 1e-8))
    if decay is not None:
        return decay
    raise ValueError("EMA needs half_life_kimg or decay")


class EMA(nn.Module):
    """A frozen copy of ``net`` whose weights track an exponential moving average of ``net``'s.

    It is a submodule of the LightningModule, so checkpoints hold it under ``ema.averaged.*`` beside the raw
    weights, and a checkpoint loads anywhere without knowing about callbacks. Buffers (e.g. BatchNorm
    statistics) are copied, not averaged.
    """

    def __init__(self, net: nn.Module, half_life_kimg: float | None = None, decay: float | None = None,
                 rampup: float | None = None, start_kimg: float = 0.0):
        super().__init__()
        if (half_life_kimg is None) == (decay is None):
            raise ValueError("EMA needs exactly one of half_life_kimg or decay")
        self.half_life_kimg = half_life_kimg
        self.decay = decay
        self.rampup, self.start_kimg = rampup, start_kimg
        self.averaged = copy.deepcopy(net).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, net: nn.Module, batch_images: int, images_seen: int) -> None:
        """Blend ``net`` into the average; before ``start_kimg`` the average just copies ``net``."""
        d = 0.0 if images_seen < self.start_kimg * 1000 else decay_for_batch(
            batch_images, self.half_life_kimg, self.decay, images_seen, self.rampup)
        avg_params = list(self.averaged.parameters())
        params = [p.detach() for p in net.parameters()]
        torch._foreach_lerp_(avg_params, params, 1.0 - d)
        for b_avg, b in zip(self.averaged.buffers(), net.buffers()):
            b_avg.copy_(b)

    def train(self, mode: bool = True):  # the average is always in eval mode
        return super().train(False)
