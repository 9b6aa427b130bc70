"""Denoising Diffusion GAN (Xiao et al. 2022, "Tackling the Generative Learning Trilemma"): a diffusion with
few (``steps`` = 2..4) large steps, whose non-Gaussian denoising distribution is a conditional GAN.

- Forward process: the ``vp`` schedule by default, the paper's discretisation of the continuous VP SDE
  (beta_min 0.1, beta_max 20): whatever T, x_T is pure noise (sqrt(abar_T) = 0.0066), which the suite's
  linear schedule is not at T = 4 (it keeps 99.9% of the image); ``linear`` / ``cosine`` stay available.
- Generator: x_0' = G(x_t, z, t), a UNet with the latent z (``latent_dim``, the paper's nz) through a
  2-layer mapping network added to the time embedding, which every residual block receives (the paper puts
  z into adaptive group norms; here the same route as the time, a per-channel shift), tanh output.
  The fake x_{t-1} is drawn from q(x_{t-1} | x_t, x_0') by the suite's one posterior step
  (``difgan.diffusion.samplers.posterior_step``, beta-tilde variance): the generator never predicts
  x_{t-1} directly, so its denoising distribution is implicit (z) yet tied to the forward process.
- Discriminator: D(x_{t-1}, t | x_t), the pair concatenated on channels, time-conditioned.
- Real pairs: x_{t-1} ~ q(x_{t-1} | x_0) (x_0 itself at the first step), x_t ~ q(x_t | x_{t-1}); t uniform.
- Non-saturating logistic loss, lazy R1 on the real x_{t-1} (``r1_gamma``, ``r1_interval``), separate Adam
  settings for G and D (``optim.g``, ``optim.d``), optional cosine lr decay, EMA of G.

Sampling: x_T ~ N(0, I), then ``steps`` generator calls, each with a fresh z and a posterior draw.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difgan.diffusion import Trajectory, q_sample_pair, sample_timesteps, samplers
from difgan.diffusion.samplers import randn_like_on
from difgan.models.gan import GANStep
from difgan.models.stepwise_gan import StepwiseGAN
from difgan.nets.step_generators import X0Generator


class DDGAN(StepwiseGAN):
    def __init__(self, image_shape, num_classes: int = 0, ema: dict | None = None, **options):
        options.setdefault("loss", "logistic")
        options.setdefault("schedule", "vp")
        super().__init__(image_shape, num_classes, ema, **options)
        self._generator = X0Generator(self.build_backbone(cond_dim=self.latent_dim))
        self._discriminator = self.build_discriminator(cond_channels=self.image_shape[0])
        self.init_ema()

    def denoise(self, net: nn.Module, x_t: Tensor, t: Tensor, noise: Tensor | None,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One generator step: (x_{t-1} ~ q(x_{t-1} | x_t, x_0'), x_0' = G(x_t, z, t)) with z drawn here."""
        z = self.draw_latent(x_t.shape[0], self.latent_dim, generator)
        x0 = net(x_t, t, z)
        return samplers.posterior_step(self.schedule, x_t, t, x0, noise, "posterior"), x0

    # ----------------------------------------------------------------- the adversarial steps
    def make_fake(self, step: GANStep) -> Tensor:
        x0 = step.real
        t = sample_timesteps(x0.shape[0], self.steps, x0.device)
        x_prev, x_t = q_sample_pair(self.schedule, x0, t)
        step.extra.update(t=t, x_t=x_t, x_prev=x_prev)
        fake, _ = self.denoise(self.generator, x_t, t, torch.randn_like(x_t))
        return fake

    def real_images(self, step: GANStep) -> Tensor:
        return step.extra["x_prev"]

    def discriminator_inputs(self, step: GANStep, images: Tensor, real: bool) -> tuple:
        return self.d_input(images), step.extra["t"], step.extra["x_t"]

    def r1_terms(self, step: GANStep) -> Tensor:
        return self.r1_on(step.extra["x_prev"], lambda x: self.discriminate(step, x, real=True))

    # ----------------------------------------------------------------- sampling
    def run_chain(self, net, x_T, generator, trajectory: Trajectory | None) -> Tensor:
        x = x_T
        if trajectory is not None:
            trajectory.timesteps.append(self.steps - 1)
            trajectory.xs.append(x.detach().clone())
        for t in range(self.steps - 1, -1, -1):
            tb = self.timesteps(x.shape[0], t)
            noise = randn_like_on(x, generator) if t > 0 else None
            x, x0 = self.denoise(net, x, tb, noise, generator)
            if trajectory is not None:
                trajectory.timesteps.append(t - 1)
                trajectory.xs.append(x.detach().clone())
                trajectory.pred_timesteps.append(t)
                trajectory.x0_preds.append(x0.detach().clone())
        return x
