"""DifGAN (seed 003, algorithm 4): a generator applied ``steps`` times, z_{k-1} = G(z_k, k) from
z_T ~ N(0, I), trained against a time-conditioned discriminator D(x, k) that judges every intermediate z_k.

Losses are the seed's weighted sums over the chain (``difgan.losses.step_weights`` / ``weighted_sum``):

    L_D = sum_k eta^d_k  d_loss(D(real_k, k), D(z_k, k)),     L_G = sum_k eta^g_k  g_loss(D(z_k, k)),

with ``model.loss`` (default the non-saturating logistic loss) for d_loss / g_loss and eta from
``weights_d`` / ``weights_g`` (uniform | increasing | final_only | an explicit list of ``steps`` numbers;
``final_only`` is a plain GAN on the chain's output). ``real_noising`` says what real_k is:
- ``clean``: the clean batch at every k (the algorithm as the seed wrote it); every z_k then goes through
  tanh, since each is judged against an image;
- ``matched``: the batch noised by the forward process to step k's level, real_k ~ q(x_k | x_0) (as
  Diffusion-GAN does, what the seed's text motivates); only the final z_0 goes through tanh.

Levels: z_k, k = T..0, with z_T the pure-noise input; the schedule's 0-based index k - 1 is level k (so
z_T ~ N(0, I) is the schedule's last, pure-noise, level) and level 0 is the clean image.

``step_latent_dim`` > 0: every step also receives a fresh latent u ~ N(0, I) of that size through the
backbone's conditioning input (DDGAN's route for its z), z_{k-1} = G(z_k, k, u_k): the chain becomes
stochastic and its diversity no longer has to come from the image-shaped z_T alone (the seed's collapse);
0 (default) is the seed's deterministic chain.

``detach_between_steps``: each step is trained on its own (detached) input, truncated backprop, so the
chain's memory does not grow with T; ``gradient_checkpointing``: full backprop, recomputing each step's
activations in the backward pass (memory of one step, ~1.3x the compute).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from difgan.diffusion import Trajectory, q_sample
from difgan.errors import ConfigError
from difgan.losses import step_weights, weighted_sum
from difgan.models.gan import GANStep
from difgan.models.stepwise_gan import StepwiseGAN
from difgan.nets.step_generators import StepGenerator
from difgan.validation import check_choice, check_int

REAL_NOISING = ("clean", "matched")


class DifGAN(StepwiseGAN):
    def __init__(self, image_shape, num_classes: int = 0, ema: dict | None = None,
                 real_noising: str = "clean", weights_d="uniform", weights_g="uniform",
                 detach_between_steps: bool = False, gradient_checkpointing: bool = False,
                 step_latent_dim: int = 0, **options):
        options.setdefault("loss", "logistic")
        super().__init__(image_shape, num_classes, ema, latent_dim=1, **options)
        check_choice("model.real_noising", real_noising, REAL_NOISING)
        check_int("model.step_latent_dim", step_latent_dim, minimum=0)
        self.step_latent_dim = int(step_latent_dim)
        self.real_noising = real_noising
        self.weights_d = self._weights("weights_d", weights_d)
        self.weights_g = self._weights("weights_g", weights_g)
        self.detach_between_steps = bool(detach_between_steps)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self._generator = StepGenerator(self.build_backbone(cond_dim=self.step_latent_dim),
                                        squash_all=real_noising == "clean")
        self._discriminator = self.build_discriminator()
        self.init_ema()

    def _weights(self, key: str, kind) -> list[float]:
        if not isinstance(kind, str):
            kind = list(kind)
        try:
            return step_weights(kind, self.steps)
        except ValueError as e:
            raise ConfigError(f"model.{key}", str(e)) from None

    # ----------------------------------------------------------------- the chain
    def level(self, i: int) -> int:
        """The level k of the chain's i-th output (i = 0: z_{T-1}, ..., i = T - 1: z_0, the image)."""
        return self.steps - 1 - i

    def chain(self, net: nn.Module, z_T: Tensor, training: bool = False,
              generator: torch.Generator | None = None) -> list[Tensor]:
        """[z_{T-1}, ..., z_0]: ``net`` applied T times from ``z_T`` (training: with the backprop options);
        per-step latents, when configured, come from ``generator``."""
        outputs, z = [], z_T
        for k in range(self.steps, 0, -1):  # z_k -> z_{k-1}, 0-based timestep k - 1
            t = self.timesteps(z.shape[0], k - 1)
            u = self.draw_latent(len(z), self.step_latent_dim, generator) if self.step_latent_dim else None
            x = z.detach() if training and self.detach_between_steps else z
            if training and self.gradient_checkpointing and torch.is_grad_enabled():
                z = checkpoint(net, x, t, u, use_reentrant=False)
            else:
                z = net(x, t, u)
            outputs.append(z)
        return outputs

    def run_chain(self, net, x_T, generator, trajectory: Trajectory | None) -> Tensor:
        outputs = self.chain(net, x_T, generator=generator)
        if trajectory is not None:
            trajectory.timesteps = list(range(self.steps - 1, -2, -1))
            trajectory.xs = [x_T.detach().clone(), *(z.detach().clone() for z in outputs)]
        return outputs[-1]

    # ----------------------------------------------------------------- the adversarial steps
    def make_fake(self, step: GANStep) -> Tensor:
        step.extra["chain"] = self.chain(self.generator, self.draw_noise(step.real.shape[0]), training=True)
        return step.extra["chain"][-1]

    def real_at(self, step: GANStep, level: int) -> Tensor:
        """The real images D sees at ``level``: clean, or x_level ~ q(x_level | x_0) (``matched``); drawn once
        per batch and level."""
        cache = step.extra.setdefault("reals", {})
        if level not in cache:
            if self.real_noising == "clean" or level == 0:
                cache[level] = step.real
            else:
                t = self.timesteps(step.real.shape[0], level - 1)
                cache[level] = q_sample(self.schedule, step.real, t)
        return cache[level]

    def judge(self, images: Tensor, level: int) -> Tensor:
        return self.discriminator(self.d_input(images), self.timesteps(images.shape[0], level))

    def discriminator_inputs(self, step: GANStep, images: Tensor, real: bool) -> tuple:
        """GANModule's composites judge the final image (level 0): a plain GAN on the chain's output."""
        return self.d_input(images), self.timesteps(images.shape[0], 0)

    def discriminator_loss(self, step: GANStep) -> tuple[Tensor, Tensor, Tensor]:
        chain, reals, fakes = step.extra["chain"], [], []

        def term(i: int) -> Tensor:
            level = self.level(i)
            real_logits = self.judge(self.real_at(step, level), level)
            fake_logits = self.judge(chain[i].detach(), level)
            reals.append(real_logits)
            fakes.append(fake_logits)
            return self.d_loss(real_logits, fake_logits)

        loss = weighted_sum(self.weights_d, term)
        return loss, torch.cat(reals), torch.cat(fakes)

    def generator_loss(self, step: GANStep) -> Tensor:
        chain = step.extra["chain"]
        return weighted_sum(self.weights_g, lambda i: self.g_loss(self.judge(chain[i], self.level(i))))

    def r1_terms(self, step: GANStep) -> Tensor:
        return weighted_sum(self.weights_d, lambda i: self.r1_on(
            self.real_at(step, self.level(i)), lambda x: self.judge(x, self.level(i))))
