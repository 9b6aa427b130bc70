"""Noise schedules: the betas of a diffusion and every quantity derived from them, precomputed once.

Timesteps are 0-based: index ``t`` in ``[0, T)`` is the paper's step ``t + 1``, so ``betas[0]`` is Ho et
al.'s beta_1 and ``alphas_cumprod[T - 1]`` is alpha-bar_T, the noisiest level. Everything is computed in
float64 and stored as float32 buffers (non-persistent: checkpoints do not hold them, the config rebuilds
them), so a ``NoiseSchedule`` moves with the module that owns it.

References: Ho, Jain and Abbeel 2020 (linear schedule, posterior q(x_{t-1} | x_t, x_0), eq. 6-7);
Nichol and Dhariwal 2021 (cosine schedule, eq. 17); Xiao et al. 2022 (``vp``: the discrete schedule of the
continuous variance-preserving SDE, for few-step models such as DDGAN).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SCHEDULES = ("linear", "cosine", "vp")


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Ho et al.'s schedule: betas evenly spaced from ``beta_start`` to ``beta_end`` (float64).

    The endpoints do not scale with T: with T=300 (seeds 000, 001) alpha-bar_T is about 0.05, so x_T keeps
    ~22% of the signal. Pass ``beta_start * 1000 / T`` and ``beta_end * 1000 / T`` for Nichol and Dhariwal's
    T-scaled variant.
    """
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> Tensor:
    """Nichol and Dhariwal's alpha-bar(t) = f(t) / f(0), f(t) = cos^2(pi/2 (t/T + s) / (1 + s)), for
    t = 0..T (float64, T + 1 values, the first 1)."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return f / f[0]


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Betas of the cosine schedule: 1 - alpha-bar(t) / alpha-bar(t-1), clipped at ``max_beta`` (the paper's
    0.999, which only bites at the last few steps) to avoid a singularity at t = T."""
    abar = cosine_alphas_cumprod(timesteps, s)
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def vp_betas(timesteps: int, beta_min: float = 0.1, beta_max: float = 20.0) -> Tensor:
    """The VP SDE's beta(s) = beta_min + s (beta_max - beta_min), s in [0, 1], discretised on T steps
    (Xiao et al. 2022, appendix): beta_t = 1 - exp(-beta_min / T - (beta_max - beta_min) (2t - 1) / (2 T^2)),
    t = 1..T, i.e. alpha-bar_t = exp(-int_0^{t/T} beta(s) ds) exactly at each step. Whatever T, x_T keeps
    exp(-(beta_min + beta_max) / 4) of the signal (0.0066 for 0.1, 20): pure noise at 2 or 4 steps, where
    the linear schedule would keep most of the image."""
    t = torch.arange(1, timesteps + 1, dtype=torch.float64)
    T = float(timesteps)
    return 1.0 - torch.exp(-beta_min / T - 0.5 * (beta_max - beta_min) * (2 * t - 1) / T**2)


def make_betas(
    schedule: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02, cosine_s: float = 0.008,
    vp_beta_min: float = 0.1, vp_beta_max: float = 20.0,
) -> Tensor:
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    if schedule == "linear":
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        return linear_betas(timesteps, beta_start, beta_end)
    if schedule == "cosine":
        if cosine_s < 0:
            raise ValueError(f"cosine_s must be non-negative, got {cosine_s}")
        return cosine_betas(timesteps, cosine_s)
    if schedule == "vp":
        if not 0 < vp_beta_min <= vp_beta_max:
            raise ValueError(f"need 0 < vp_beta_min <= vp_beta_max, got {vp_beta_min}, {vp_beta_max}")
        return vp_betas(timesteps, vp_beta_min, vp_beta_max)
    raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


class NoiseSchedule(nn.Module):
    """Betas and their derived quantities for T steps, as buffers indexed by 0-based timestep.

    ``NoiseSchedule.from_config("linear", 1000)`` builds one; ``NoiseSchedule(betas)`` takes any betas.
    ``extract(name, t, ndim)`` gathers one quantity per sample, shaped to broadcast against images.
    """

    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor

    def __init__(self, betas: Tensor):
        super().__init__()
        b = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if b.numel() < 1 or not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("betas must lie in (0, 1)")
        a = 1.0 - b
        abar = torch.cumprod(a, 0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        post_var = b * (1.0 - abar_prev) / (1.0 - abar)  # beta-tilde_t; 0 at t = 0 (x_0 is then known)
        values = {
            "betas": b,
            "alphas": a,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
            "sqrt_recip_alphas_cumprod": abar.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1.0).sqrt(),
            "posterior_variance": post_var,
            # log of beta-tilde with its t=0 value (0) replaced by the t=1 value, as in Ho et al.'s code
            "posterior_log_variance_clipped": torch.log(
                torch.cat([post_var[1:2], post_var[1:]]) if b.numel() > 1 else b
            ),
            "posterior_mean_coef1": b * abar_prev.sqrt() / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * a.sqrt() / (1.0 - abar),
        }
        for name, value in values.items():
            self.register_buffer(name, value.float(), persistent=False)
        self.register_buffer("alphas_cumprod_f64", abar, persistent=False)

    @classmethod
    def from_config(
        cls,
        schedule: str = "linear",
        timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
        vp_beta_min: float = 0.1,
        vp_beta_max: float = 20.0,
    ) -> NoiseSchedule:
        return cls(make_betas(schedule, timesteps, beta_start, beta_end, cosine_s, vp_beta_min, vp_beta_max))

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def extract(self, name: str, t: Tensor, ndim: int, dtype: torch.dtype | None = None) -> Tensor:
        """``self.<name>[t]`` reshaped to (B, 1, ..., 1) with ``ndim`` dims in all."""
        values: Tensor = getattr(self, name)
        out = values.to(t.device)[t.long()]
        if dtype is not None:
            out = out.to(dtype)
        return out.reshape(-1, *([1] * (ndim - 1)))

    def snr(self, t: Tensor | None = None) -> Tensor:
        """Signal-to-noise ratio alpha-bar / (1 - alpha-bar), at ``t`` or at every step."""
        abar = self.alphas_cumprod_f64 if t is None else self.alphas_cumprod_f64.to(t.device)[t.long()]
        return abar / (1.0 - abar)

    def terminal_signal(self) -> float:
        """sqrt(alpha-bar_T): how much of x_0 survives in x_T (0.0064 for Ho et al.'s T=1000 schedule)."""
        return float(self.alphas_cumprod_f64[-1].sqrt())

    def extra_repr(self) -> str:
        return f"T={self.num_timesteps}, terminal_signal={self.terminal_signal():.4f}"
