"""Adversarial losses, regularisers and discriminator-input tricks: plain functions on logits and images.

``LOSSES`` maps the config's ``model.loss`` to a (discriminator loss, generator loss) pair:
- ``bce``: binary cross-entropy with (optionally smoothed) targets for D, non-saturating -log D(G(z)) for G
  (Goodfellow et al. 2014; DCGAN);
- ``logistic``: the same non-saturating logistic loss without label smoothing (StyleGAN2's name for it);
- ``hinge``: max(0, 1 - D(x)) + max(0, 1 + D(G(z))) for D, -D(G(z)) for G (Lim and Ye 2017; BigGAN).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def discriminator_bce(real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0,
                      fake_target: float = 0.0) -> Tensor:
    """The discriminator's binary cross-entropy; targets below 1 / above 0 are (one- or two-sided) label
    smoothing (seed 004 used 0.9 and 0.1)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.full_like(fake_logits, fake_target)))


def discriminator_logistic(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """softplus(-D(x)) + softplus(D(G(z))): BCE with hard targets, written as StyleGAN2 writes it."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def discriminator_hinge(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def generator_nonsaturating(fake_logits: Tensor) -> Tensor:
    """-log D(G(z)) (Goodfellow et al.'s non-saturating generator loss)."""
    return F.softplus(-fake_logits).mean()


def generator_hinge(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()


DiscriminatorLoss = Callable[[Tensor, Tensor], Tensor]
GeneratorLoss = Callable[[Tensor], Tensor]
LOSSES: dict[str, tuple[DiscriminatorLoss, GeneratorLoss]] = {
    "bce": (discriminator_bce, generator_nonsaturating),
    "logistic": (discriminator_logistic, generator_nonsaturating),
    "hinge": (discriminator_hinge, generator_hinge),
}


def r1_penalty(real_logits: Tensor, real_inputs: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): E ||grad_x D(x)||^2 over real inputs, per sample summed over pixels.

    ``real_inputs`` must require grad and ``real_logits`` come from them; the graph is kept so the penalty
    can be backpropagated into D. The caller multiplies by gamma / 2 (and by the lazy interval)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def path_lengths(images: Tensor, ws: Tensor, noise: Tensor | None = None) -> Tensor:
    """||J_w^T y|| per sample (Karras et al. 2020, eq. 4): the generator's Jacobian with respect to its styles
    ``ws`` (B, num_ws, w_dim), applied to image-space noise y ~ N(0, I) / sqrt(H W) (``noise`` may be given);
    the squared norm is summed over w_dim and averaged over the style layers. The graph is kept."""
    if noise is None:
        noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()


def path_length_penalty(lengths: Tensor, pl_mean: Tensor, decay: float = 0.01) -> tuple[Tensor, Tensor]:
    """(E (||J^T y|| - a)^2, new a): ``a`` is the running mean of path lengths, moved by ``decay`` towards
    this batch's mean before the penalty is taken (as in the paper's code). The caller multiplies by
    ``pl_weight`` (and by the lazy interval) and stores the new mean."""
    new_mean = pl_mean.lerp(lengths.detach().mean().to(pl_mean.dtype), decay)
    return (lengths - new_mean.to(lengths.dtype)).square().mean(), new_mean


def instance_noise(images: Tensor, std: float) -> Tensor:
    """Gaussian noise on discriminator inputs (Sønderby et al. 2016); identity when std is 0."""
    return images + std * torch.randn_like(images) if std > 0 else images


def annealed(start: float, images_seen: int, over_kimg: float) -> float:
    """``start`` decayed linearly to 0 over ``over_kimg`` thousand images (constant if over_kimg is 0)."""
    if over_kimg <= 0:
        return start
    return start * max(0.0, 1.0 - images_seen / (over_kimg * 1000.0))


STEP_WEIGHTINGS = ("uniform", "increasing", "final_only")


def step_weights(kind: str | list | tuple, steps: int) -> list[float]:
    """Per-step loss weights eta_k of a ``steps``-step generator (seed 003, algorithm 4), in chain order:
    entry i belongs to the i-th generator output, the last entry to the final image.

    ``uniform``: 1/T each; ``increasing``: proportional to i + 1 (toward the final image), summing to 1;
    ``final_only``: only the final image (a plain GAN on the chain's output); a list of ``steps`` numbers:
    used as given (not normalised). Raises ValueError for anything else."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if isinstance(kind, str):
        if kind == "uniform":
            return [1.0 / steps] * steps
        if kind == "increasing":
            total = steps * (steps + 1) / 2
            return [(i + 1) / total for i in range(steps)]
        if kind == "final_only":
            return [0.0] * (steps - 1) + [1.0]
        raise ValueError(f"unknown weighting {kind!r}; valid: {', '.join(STEP_WEIGHTINGS)} or a list of "
                         f"{steps} numbers")
    weights = [float(w) for w in kind]
    if len(weights) != steps:
        raise ValueError(f"an explicit weight list needs one number per step ({steps}), got {len(weights)}")
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"weights must be non-negative with at least one positive, got {weights}")
    return weights


def weighted_sum(weights: list[float], term: Callable[[int], Tensor]) -> Tensor:
    """sum_i weights[i] * term(i), skipping (never evaluating) terms whose weight is 0."""
    total: Tensor | None = None
    for i, w in enumerate(weights):
        if w == 0:
            continue
        value = w * term(i)
        total = value if total is None else total + value
    if total is None:
        raise ValueError("all weights are zero")
    return total
