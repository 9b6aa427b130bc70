"""Diffusion-GAN (Wang et al. 2023) on any GAN of the suite: ``DiffusionAugment`` diffuses the discriminator's
real and fake inputs at a sampled t and hands t to a time-conditioned discriminator (projection of a learned
or sinusoidal t embedding onto the backbone's features); the adaptive T controller reads D's verdict on reals
after every D update.

- ``model=diffusion_gan``: ``DiffusionStyleGAN2`` (the paper's Diffusion-StyleGAN2, seed 001's model);
- ``model=diffusion_dcgan``: ``DiffusionDCGAN``.

The mixin plugs in through ``GANModule``'s steps only (``build`` of the discriminator,
``discriminator_inputs``, ``after_d_step``, ``extra_logs``); the adversarial loop is not copied.
``diffusion.enabled: false`` leaves the backbone's behaviour untouched, bit for bit (the t embedding is built
on a forked RNG, so even the random draws of training match the plain model from the same seed).
"""

from __future__ import annotations

import torch
from torch import Tensor

from difgan.diffusion.augment import T_SAMPLING, DiffusionAugment
from difgan.errors import ConfigError
from difgan.models.gan import DCGAN, GANStep
from difgan.models.stylegan2 import StyleGAN2
from difgan.nets.embeddings import TIME_EMBEDDINGS
from difgan.nets.time_conditioned import TimeConditionedDiscriminator
from difgan.validation import check_choice, check_int, require

DIFFUSION_KEYS = ("enabled", "t_min", "t_max", "d_target", "ada_interval", "ada_kimg", "t_sampling",
                  "beta_start", "beta_end", "noise_sd", "start_kimg", "t_embedding", "t_embed_dim",
                  "adaptive", "p_init")


def build_augment(options: dict | None) -> tuple[DiffusionAugment, dict]:
    """A ``DiffusionAugment`` from the ``model.diffusion`` node (each bad value a ConfigError naming its key),
    and the options the model keeps itself (enabled, start_kimg, t_embedding, t_embed_dim)."""
    o = dict(options or {})
    unknown = sorted(set(o) - set(DIFFUSION_KEYS))
    if unknown:
        raise ConfigError(f"model.diffusion.{unknown[0]}", f"unknown key; valid: {', '.join(DIFFUSION_KEYS)}")
    own = {"enabled": bool(o.pop("enabled", True)), "start_kimg": float(o.pop("start_kimg", 0.0)),
           "t_embedding": o.pop("t_embedding", "sinusoidal"), "t_embed_dim": o.pop("t_embed_dim", None)}
    k = "model.diffusion."
    require(k + "start_kimg", own["start_kimg"], own["start_kimg"] >= 0)
    check_choice(k + "t_embedding", own["t_embedding"], TIME_EMBEDDINGS)
    check_int(k + "t_embed_dim", own["t_embed_dim"], minimum=2, allow_none=True)
    t_min, t_max = o.get("t_min", 10), o.get("t_max", 1000)
    check_int(k + "t_min", t_min)
    check_int(k + "t_max", t_max)
    require(k + "t_max", t_max, t_max >= t_min, f"at least t_min={t_min}")
    check_int(k + "ada_interval", o.get("ada_interval", 4))
    require(k + "ada_kimg", o.get("ada_kimg", 100.0), float(o.get("ada_kimg", 100.0)) > 0)
    require(k + "d_target", o.get("d_target", 0.6), -1 <= float(o.get("d_target", 0.6)) <= 1, "in [-1, 1]")
    check_choice(k + "t_sampling", o.get("t_sampling", "priority"), T_SAMPLING)
    require(k + "noise_sd", o.get("noise_sd", 0.05), float(o.get("noise_sd", 0.05)) > 0)
    b0, b1 = float(o.get("beta_start", 1e-4)), float(o.get("beta_end", 0.02))
    require(k + "beta_end", (b0, b1), 0 < b0 <= b1 < 1, "need 0 < beta_start <= beta_end < 1")
    require(k + "p_init", o.get("p_init", 0.0), 0 <= float(o.get("p_init", 0.0)) <= 1)
    return DiffusionAugment(**o), own


class DiffusionGANMixin:
    """Turns a ``GANModule`` with a ``_discriminator`` backbone (providing ``features_and_logit`` and
    ``feature_dim``) into its Diffusion-GAN. Put it first in the bases: ``class X(DiffusionGANMixin,
    GAN)``."""

    def __init__(self, *args, diffusion: dict | None = None, **kwargs):
        augment, own = build_augment(diffusion)
        super().__init__(*args, **kwargs)
        self.augment = augment
        self.diffusion_enabled, self.diffusion_start_kimg = own["enabled"], own["start_kimg"]
        # Built on a forked RNG: the backbone's initialisation and training draws stay those of the plain GAN.
        with torch.random.fork_rng(devices=[]):
            self._discriminator = TimeConditionedDiscriminator(self._discriminator, own["t_embedding"],
                                                               augment.t_max, own["t_embed_dim"])

    def diffusion_active(self) -> bool:
        return self.diffusion_enabled and self.images_seen >= self.diffusion_start_kimg * 1000

    def discriminator_inputs(self, step: GANStep, images: Tensor, real: bool) -> tuple:
        inputs = super().discriminator_inputs(step, images, real)
        if not self.diffusion_enabled:
            return inputs
        x, *rest = inputs
        if self.diffusion_active():
            x, t = self.augment(x)
        else:  # before diffusion_start_kimg: clean images, t = 0
            t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return (x, *rest, t)

    def after_d_step(self, step: GANStep, real_logits: Tensor, fake_logits: Tensor) -> None:
        super().after_d_step(step, real_logits, fake_logits)
        if self.diffusion_active():
            world = self.trainer.world_size if self._trainer is not None else 1
            reduce = (lambda x: self.trainer.strategy.reduce(x, reduce_op="sum")) if world > 1 else None
            self.augment.observe(real_logits, real_logits.shape[0] * world, reduce)

    def extra_logs(self) -> dict:
        logs = super().extra_logs()
        if self.diffusion_enabled:
            logs.update(self.augment.logs())
        return logs


class DiffusionStyleGAN2(DiffusionGANMixin, StyleGAN2):
    """Diffusion-StyleGAN2 (``model=diffusion_gan``)."""


class DiffusionDCGAN(DiffusionGANMixin, DCGAN):
    """Diffusion-GAN on the DCGAN backbone (``model=diffusion_dcgan``)."""
