"""What DifGAN and DDGAN share: GANs whose generator runs ``steps`` times from image-shaped noise.

``StepwiseGAN`` (on ``GANModule``) owns the pieces the two have in common, once:
- the noise schedule of their ``steps`` levels (``schedule``: linear | cosine | vp, ``difgan.diffusion``);
- the generator's backbone (``backbone``: ``encdec``, the DCGAN-style encoder-decoder ``channels`` wide,
  cheap on a CPU; or ``unet``, the DDPM UNet configured by ``unet``) and the time embedding
  (``t_embedding``: learned | sinusoidal), shared by generator and discriminator;
- the time-conditioned discriminator ``TimeConditionedDiscriminator`` (``d_channels`` wide, with a
  minibatch-standard-deviation feature over groups of ``d_mbstd_group_size`` when it is > 0);
- lazy R1 on real discriminator inputs (``r1_gamma``, ``r1_interval``; the subclass says which inputs);
- optional cosine learning-rate decay over ``lr_decay_kimg`` thousand images to ``lr_decay_min``;
- sampling: ``noise_shape`` is the image's, ``sample`` runs the chain (``run_chain``), and
  ``sample_trajectory`` returns every intermediate state as a ``difgan.diffusion.Trajectory``.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import Tensor, nn

from difgan.diffusion import SCHEDULES, NoiseSchedule, Trajectory
from difgan.errors import ConfigError
from difgan.losses import r1_penalty
from difgan.models.gan import GANModule, GANStep, Regularizer
from difgan.models.unet_config import build_unet, unet_options
from difgan.nets.dcgan import base_grid
from difgan.nets.embeddings import TIME_EMBEDDINGS
from difgan.nets.encdec import NORMS as ENCDEC_NORMS
from difgan.nets.encdec import EncoderDecoder
from difgan.nets.time_discriminator import TimeConditionedDiscriminator
from difgan.validation import check_choice, check_int, require

BACKBONES = ("encdec", "unet")
SMALL_UNET: dict[str, Any] = {
    "channels": 32,
    "channel_mult": (1, 2, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (),
    "dropout": 0.0,
    "attention_heads": 1,
    "mid_attention": False,
}


class StepwiseGAN(GANModule, abc.ABC):
    has_trajectory = True

    def __init__(self, image_shape, num_classes: int = 0, ema: dict | None = None, steps: int = 4,
                 schedule: str = "cosine", beta_start: float = 1e-4, beta_end: float = 0.02,
                 cosine_s: float = 0.008, vp_beta_min: float = 0.1, vp_beta_max: float = 20.0,
                 t_embedding: str = "learned", backbone: str = "encdec", channels: int = 32,
                 encdec_norm: str = "group",
                 unet: dict | None = None, d_channels: int = 32, d_mbstd_group_size: int = 0,
                 r1_gamma: float = 0.0, r1_interval: int = 16, lr_decay_kimg: float | None = None,
                 lr_decay_min: float = 0.0, **gan_options):
        if num_classes:
            raise ConfigError("model.conditional", f"{type(self).__name__} is unconditional here")
        super().__init__(image_shape, num_classes, ema, **gan_options)
        _, height, width = self.image_shape
        if height != width:
            raise ConfigError("data.resolution", f"needs square images, got {height}x{width}")
        try:
            base_grid(height)
        except ValueError as e:
            raise ConfigError("data.resolution", f"the discriminator: {e}") from None
        check_int("model.steps", steps)
        check_choice("model.schedule", schedule, SCHEDULES)
        check_choice("model.t_embedding", t_embedding, TIME_EMBEDDINGS)
        check_choice("model.backbone", backbone, BACKBONES)
        check_int("model.channels", channels)
        check_int("model.d_channels", d_channels)
        check_int("model.d_mbstd_group_size", d_mbstd_group_size, minimum=0)
        require("model.r1_gamma", r1_gamma, r1_gamma >= 0)
        check_int("model.r1_interval", r1_interval)
        require("model.lr_decay_kimg", lr_decay_kimg, lr_decay_kimg is None or lr_decay_kimg > 0)
        require("model.lr_decay_min", lr_decay_min, lr_decay_min >= 0)
        self.steps = int(steps)
        try:
            self.schedule = NoiseSchedule.from_config(schedule, self.steps, beta_start, beta_end, cosine_s,
                                                      vp_beta_min, vp_beta_max)
        except ValueError as e:
            key = {"linear": "beta_start", "cosine": "cosine_s", "vp": "vp_beta_min"}[schedule]
            raise ConfigError(f"model.{key}", str(e)) from None
        self.schedule_name, self.t_embedding = schedule, t_embedding
        self.backbone, self.backbone_channels = backbone, int(channels)
        check_choice("model.encdec_norm", encdec_norm, ENCDEC_NORMS)
        self.encdec_norm = encdec_norm
        self.unet_options = unet_options(SMALL_UNET, unet)
        self.d_channels, self.d_mbstd_group_size = int(d_channels), int(d_mbstd_group_size)
        self.r1_gamma, self.r1_interval = float(r1_gamma), int(r1_interval)
        self.lr_decay_kimg, self.lr_decay_min = lr_decay_kimg, float(lr_decay_min)

    # ----------------------------------------------------------------- building blocks for subclasses
    def build_backbone(self, **extra) -> nn.Module:
        channels, resolution, _ = self.image_shape
        if self.backbone == "encdec":
            return EncoderDecoder(channels, resolution, self.backbone_channels, self.t_embedding, self.steps,
                                  norm=self.encdec_norm, **extra)
        return build_unet(self.unet_options, channels, resolution, time_embedding_kind=self.t_embedding,
                          num_timesteps=self.steps, **extra)

    def build_discriminator(self, cond_channels: int = 0) -> nn.Module:
        channels, resolution, _ = self.image_shape
        return TimeConditionedDiscriminator(channels, resolution, self.d_channels, self.steps,
                                            self.t_embedding, cond_channels,
                                            mbstd_group_size=self.d_mbstd_group_size)

    def timesteps(self, n: int, t: int) -> Tensor:
        return torch.full((n,), int(t), device=self.device, dtype=torch.long)

    def draw_latent(self, n: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
        """A per-step latent (n, dim) ~ N(0, I) (DDGAN's z; DifGAN's optional u), from ``generator`` when
        given (reproducible sampling), else from the global RNG (training)."""
        if generator is None:
            return torch.randn(n, dim, device=self.device)
        return torch.randn(n, dim, generator=generator, device=generator.device).to(self.device)

    # ----------------------------------------------------------------- R1
    def r1_loss(self, step: GANStep) -> Tensor:
        """gamma / 2 * R1 on the real discriminator inputs (the subclass says which, ``r1_terms``)."""
        return 0.5 * self.r1_gamma * self.r1_terms(step)

    @abc.abstractmethod
    def r1_terms(self, step: GANStep) -> Tensor:
        """E ||grad_x D(x)||^2 over this model's real discriminator inputs (``r1_penalty``)."""

    def r1_on(self, real: Tensor, judge) -> Tensor:
        """``r1_penalty`` of ``judge(x)`` at x = ``real`` (detached copy that requires grad)."""
        x = real.detach().requires_grad_(True)
        return r1_penalty(judge(x), x)

    def regularizers(self) -> list[Regularizer]:
        if self.r1_gamma <= 0:
            return []
        return [Regularizer("r1", "d", self.r1_interval, self.r1_loss)]

    # ----------------------------------------------------------------- learning-rate decay
    def lr_factor(self) -> float:
        """Cosine decay from 1 at the start to 0 after ``lr_decay_kimg`` thousand images (then flat)."""
        if not self.lr_decay_kimg:
            return 1.0
        progress = min(1.0, self.images_seen / (self.lr_decay_kimg * 1000.0))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if not self.lr_decay_kimg:
            return
        factor = self.lr_factor()
        for opt in self.optimizers():
            for group in opt.param_groups:
                base = group.setdefault("initial_lr", group["lr"])
                group["lr"] = self.lr_decay_min + (base - self.lr_decay_min) * factor

    def extra_logs(self) -> dict[str, Tensor | float]:
        if not self.lr_decay_kimg:
            return {}
        return {"train/lr_g": self.optimizers()[0].param_groups[0]["lr"]}

    # ----------------------------------------------------------------- sampling
    @property
    def noise_shape(self) -> tuple[int, ...]:
        return self.image_shape

    @abc.abstractmethod
    def run_chain(self, net: nn.Module, x_T: Tensor, generator: torch.Generator | None,
                  trajectory: Trajectory | None) -> Tensor:
        """The final images from initial noise ``x_T`` with generator ``net``; records every state into
        ``trajectory`` when given (first x_T at timestep steps - 1, last the image at -1)."""

    def sample_protocol(self, **options) -> dict:
        return {"generator_calls": self.steps, "steps": self.steps, "schedule": self.schedule_name}

    def generate(self, net, n, labels, generator, noise=None, **options) -> Tensor:
        box = options.pop("_trajectory", None)
        self.check_sample_options(options)
        x_T = noise.to(self.device) if noise is not None else self.draw_noise(n, generator)
        trajectory = Trajectory() if box is not None else None
        images = self.run_chain(net, x_T, generator, trajectory)
        if box is not None:
            box.append(trajectory)
        return images

    @torch.no_grad()
    def sample_trajectory(self, n: int, labels: Tensor | None = None, **options) -> tuple[Tensor, Trajectory]:
        """``sample`` plus every intermediate state of the chain (``Trajectory.xs``: steps + 1 frames)."""
        box: list[Trajectory] = []
        images = self.sample(n, labels, _trajectory=box, **options)
        return images, box[0]
