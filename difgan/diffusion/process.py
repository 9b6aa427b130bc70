"""The forward process q(x_t | x_0), the posterior q(x_{t-1} | x_t, x_0), and conversions between the
noise a network predicts and the x_0 it implies. Plain functions of a ``NoiseSchedule`` and a batch of
per-sample 0-based timesteps ``t`` (shape (B,)).

Ho et al. 2020: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (eq. 4);
posterior mean = coef1 x_0 + coef2 x_t, variance beta-tilde_t (eq. 6-7).
"""

from __future__ import annotations

import torch
from torch import Tensor

from difgan.diffusion.schedules import NoiseSchedule


def q_mean_variance(schedule: NoiseSchedule, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_t | x_0)."""
    mean = schedule.extract("sqrt_alphas_cumprod", t, x0.ndim, x0.dtype) * x0
    var = 1.0 - schedule.extract("alphas_cumprod", t, x0.ndim, x0.dtype)
    return mean, var.expand_as(mean)


def q_sample(
    schedule: NoiseSchedule,
    x0: Tensor,
    t: Tensor,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw x_t ~ q(x_t | x_0) for each sample's own t; ``noise`` (the eps of the loss) may be given."""
    if noise is None:
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    return (
        schedule.extract("sqrt_alphas_cumprod", t, x0.ndim, x0.dtype) * x0
        + schedule.extract("sqrt_one_minus_alphas_cumprod", t, x0.ndim, x0.dtype) * noise
    )


def q_sample_pair(
    schedule: NoiseSchedule, x0: Tensor, t: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """A real pair (x_{t-1}, x_t) for each sample's 0-based ``t``: x_{t-1} ~ q(x_{t-1} | x_0) (x_0 itself
    where t = 0) and x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), one step of the forward
    chain (DDGAN's real discriminator inputs, Xiao et al. 2022, eq. 4)."""
    prev = q_sample(schedule, x0, (t - 1).clamp(min=0), generator=generator)
    first = (t == 0).reshape(-1, *([1] * (x0.ndim - 1)))
    prev = torch.where(first, x0, prev)
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    xt = (schedule.extract("alphas", t, x0.ndim, x0.dtype).sqrt() * prev
          + schedule.extract("betas", t, x0.ndim, x0.dtype).sqrt() * noise)
    return prev, xt


def q_posterior(schedule: NoiseSchedule, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
    mean = (
        schedule.extract("posterior_mean_coef1", t, xt.ndim, xt.dtype) * x0
        + schedule.extract("posterior_mean_coef2", t, xt.ndim, xt.dtype) * xt
    )
    var = schedule.extract("posterior_variance", t, xt.ndim, xt.dtype)
    log_var = schedule.extract("posterior_log_variance_clipped", t, xt.ndim, xt.dtype)
    return mean, var.expand_as(mean), log_var.expand_as(mean)


def predict_x0_from_eps(schedule: NoiseSchedule, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    return (
        schedule.extract("sqrt_recip_alphas_cumprod", t, xt.ndim, xt.dtype) * xt
        - schedule.extract("sqrt_recipm1_alphas_cumprod", t, xt.ndim, xt.dtype) * eps
    )


def predict_eps_from_x0(schedule: NoiseSchedule, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t), the inverse of ``predict_x0_from_eps``."""
    return (schedule.extract("sqrt_recip_alphas_cumprod", t, xt.ndim, xt.dtype) * xt - x0) / schedule.extract(
        "sqrt_recipm1_alphas_cumprod", t, xt.ndim, xt.dtype
    )


def sample_timesteps(
    batch_size: int,
    num_timesteps: int,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One uniformly drawn timestep per sample (seed 004's lesson: per sample, never one per batch)."""
    return torch.randint(0, num_timesteps, (batch_size,), device=device, generator=generator)
