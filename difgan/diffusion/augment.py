"""Diffusion-GAN's instance-noise injection (Wang et al. 2023, "Diffusion-GAN: Training GANs with Diffusion"):
real and fake images both go through the forward diffusion at a sampled step t before the discriminator sees
them (with t), and the largest step T adapts to how confident the discriminator is on reals.

``DiffusionAugment`` is reusable by any GAN: ``augment(x) -> (x_t, t)`` and ``observe(real_logits, images)``
after each discriminator update; ``GANModule`` subclasses call them from ``discriminator_inputs`` and
``after_d_step`` (see ``difgan.models.diffusion_gan``).

- Forward process: a linear beta schedule (``beta_start`` .. ``beta_end``, the shared ``NoiseSchedule``) over
  the current T steps, re-spread whenever T changes as in the paper's code, so the noisiest level is always
  t = T; x_t = sqrt(abar_t) x + ``noise_sd`` sqrt(1 - abar_t) eps (noise_sd 0.05 in the paper's StyleGAN2
  setting). t = 0 leaves the image clean.
- t per image from {0, ..., T}: ``priority`` (probability proportional to t, so t = 0 never) or ``uniform``.
- Adaptive T: every ``ada_interval`` discriminator updates, r_d = E[sign(D(real))] over those updates;
  p += sign(r_d - ``d_target``) * (images in those updates) / (``ada_kimg`` * 1000), clipped to [0, 1];
  T = round(t_min + p (t_max - t_min)). An over-confident discriminator (r_d above target) gets more noise.
- p, T, r_d and the running sums are persistent buffers: checkpoints carry them, resume restores them exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from difgan.diffusion.schedules import NoiseSchedule, make_betas

T_SAMPLING = ("priority", "uniform")


class DiffusionAugment(nn.Module):
    def __init__(self, t_min: int = 10, t_max: int = 1000, d_target: float = 0.6, ada_interval: int = 4,
                 ada_kimg: float = 100.0, t_sampling: str = "priority", beta_start: float = 1e-4,
                 beta_end: float = 0.02, noise_sd: float = 0.05, p_init: float = 0.0, adaptive: bool = True):
        super().__init__()
        if not 1 <= t_min <= t_max:
            raise ValueError(f"need 1 <= t_min <= t_max, got {t_min}, {t_max}")
        if t_sampling not in T_SAMPLING:
            raise ValueError(f"unknown t_sampling {t_sampling!r}; valid: {', '.join(T_SAMPLING)}")
        make_betas("linear", t_min, beta_start, beta_end)  # validates the betas
        self.t_min, self.t_max = int(t_min), int(t_max)
        self.d_target, self.ada_interval, self.ada_kimg = float(d_target), int(ada_interval), float(ada_kimg)
        self.t_sampling, self.noise_sd, self.adaptive = t_sampling, float(noise_sd), bool(adaptive)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.register_buffer("p", torch.tensor(float(p_init), dtype=torch.float64))
        self.register_buffer("T", torch.tensor(self.T_for(float(p_init)), dtype=torch.int64))
        self.register_buffer("r_d", torch.zeros((), dtype=torch.float64))        # last interval's r_d
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.float64))   # since the last update
        self.register_buffer("num_logits", torch.zeros((), dtype=torch.int64))
        self.register_buffer("num_images", torch.zeros((), dtype=torch.int64))   # all ranks together
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))
        self._schedule: tuple[int, NoiseSchedule] | None = None

    def T_for(self, p: float) -> int:  # noqa: N802 - the paper's name
        return int(round(self.t_min + p * (self.t_max - self.t_min)))

    def schedule(self) -> NoiseSchedule:
        """The linear schedule spread over the current T steps (index t - 1 is step t)."""
        T = int(self.T)
        if self._schedule is None or self._schedule[0] != T:
            self._schedule = (T, NoiseSchedule(make_betas("linear", T, self.beta_start, self.beta_end)))
        return self._schedule[1]

    def sample_t(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """n steps from {0, ..., T}: probability proportional to t (priority) or uniform."""
        T = int(self.T)
        if self.t_sampling == "uniform":
            t = torch.randint(0, T + 1, (n,), generator=generator,
                              device=generator.device if generator is not None else device)
        else:
            weights = torch.arange(T + 1, dtype=torch.float64,
                                   device=generator.device if generator is not None else device)
            t = torch.multinomial(weights, n, replacement=True, generator=generator)
        return t.to(device)

    def diffuse(self, x: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """x_t = sqrt(abar_t) x + noise_sd sqrt(1 - abar_t) eps; images with t = 0 are returned unchanged."""
        sched = self.schedule()
        idx = (t - 1).clamp(min=0)
        abar = sched.alphas_cumprod_f64.to(x.device)[idx].to(x.dtype)
        abar = torch.where(t.to(x.device) > 0, abar, torch.ones_like(abar)).reshape(-1, *([1] * (x.ndim - 1)))
        if noise is None:
            noise = torch.randn_like(x)
        return abar.sqrt() * x + self.noise_sd * (1 - abar).sqrt() * noise

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        t = self.sample_t(x.shape[0], x.device, generator)
        return self.diffuse(x, t), t

    @torch.no_grad()
    def observe(self, real_logits: Tensor, images: int,
                reduce: Callable[[Tensor], Tensor] | None = None) -> bool:
        """Count one discriminator update's verdict on reals (``images``: all ranks' images in it); every
        ``ada_interval`` updates, adjust p and T (``reduce`` sums the counts over ranks). Returns whether T
        was updated."""
        self.sign_sum += torch.sign(real_logits.detach()).sum().to(self.sign_sum)
        self.num_logits += real_logits.numel()
        self.num_images += int(images)
        self.num_updates += 1
        if int(self.num_updates) % self.ada_interval != 0:
            return False
        counts = torch.stack([self.sign_sum, self.num_logits.double()])
        if reduce is not None:
            counts = reduce(counts)
        self.r_d.fill_(float(counts[0] / counts[1].clamp(min=1)))
        if self.adaptive:
            step = float(torch.sign(self.r_d - self.d_target)) * int(self.num_images) / (self.ada_kimg * 1000)
            self.p.fill_(min(1.0, max(0.0, float(self.p) + step)))
            self.T.fill_(self.T_for(float(self.p)))
        self.sign_sum.zero_()
        self.num_logits.zero_()
        self.num_images.zero_()
        return True

    def logs(self) -> dict[str, float]:
        return {"diffusion/p": float(self.p), "diffusion/T": float(self.T), "diffusion/r_d": float(self.r_d)}

    def extra_repr(self) -> str:
        return (f"t_min={self.t_min}, t_max={self.t_max}, d_target={self.d_target}, "
                f"ada_interval={self.ada_interval}, ada_kimg={self.ada_kimg:g}, "
                f"t_sampling={self.t_sampling}, "
                f"noise_sd={self.noise_sd:g}")
