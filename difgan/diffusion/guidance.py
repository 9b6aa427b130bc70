"""Turning a denoising network into the ``eps_fn(x_t, t)`` the samplers call, with classifier-free guidance
(Ho and Salimans 2021) folded in, and the type of the guidance hooks samplers accept.

Guidance scale convention: eps = eps_uncond + s (eps_cond - eps_uncond). s = 1 is the plain conditional
model, s = 0 the unconditional one, s > 1 sharpens towards the class (seed 000 used s = 5). Ho and
Salimans' w is s - 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difgan.diffusion.samplers import EpsFn, Guidance

__all__ = ["EpsFn", "Guidance", "denoiser_eps_fn"]

Denoiser = Callable[..., Tensor]  # net(x_t, t, labels) -> eps; labels None or containing the null class


def denoiser_eps_fn(
    net: Denoiser, labels: Tensor | None = None, guidance_scale: float = 1.0, null_label: int | None = None
) -> EpsFn:
    """``eps_fn`` for ``net`` conditioned on ``labels``; with ``guidance_scale != 1`` the conditional and
    the unconditional (``null_label``) predictions come from one batched forward pass of 2B samples."""
    if labels is None or guidance_scale == 1.0:
        return lambda x, t: net(x, t, labels)
    if null_label is None:
        raise ValueError("classifier-free guidance needs the network's null label")
    null = torch.full_like(labels, null_label)
    if guidance_scale == 0.0:
        return lambda x, t: net(x, t, null)
    both = torch.cat([labels, null])

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        eps_c, eps_u = net(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
        return eps_u + guidance_scale * (eps_c - eps_u)

    return eps_fn
