"""Adversarial training with Lightning's manual optimization, and DCGAN built on it.

``GANModule`` owns the loop every GAN here shares: ``d_steps`` discriminator updates per generator update
(one discriminator update per batch, the generator every ``d_steps``-th batch), non-saturating BCE, label
smoothing and annealed instance noise on discriminator inputs. Subclasses supply the two networks.
Lightning's ``global_step`` counts optimizer steps (two per batch when d_steps is 1); the suite's own
``batches_seen`` and ``images_seen`` count batches and images.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from difgan.errors import ConfigError
from difgan.losses import annealed, discriminator_bce, generator_nonsaturating, instance_noise
from difgan.models.base import GenerativeModule
from difgan.nets.dcgan import DCGANDiscriminator, DCGANGenerator, base_grid


class GANModule(GenerativeModule, abc.ABC):
    def __init__(self, image_shape, num_classes: int = 0, ema: dict | None = None, latent_dim: int = 100,
                 lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999), d_steps: int = 1,
                 label_smoothing: float = 0.0, fake_label: float = 0.0, instance_noise: float = 0.0,
                 instance_noise_kimg: float = 0.0):
        super().__init__(image_shape, num_classes, ema)
        self.automatic_optimization = False
        checks = {
            "model.latent_dim": latent_dim >= 1, "model.lr": lr > 0, "model.d_steps": d_steps >= 1,
            "model.label_smoothing": 0 <= label_smoothing < 0.5, "model.fake_label": 0 <= fake_label < 0.5,
            "model.instance_noise": instance_noise >= 0,
            "model.instance_noise_kimg": instance_noise_kimg >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(key, f"impossible value {locals()[key.split('.')[1]]!r}")
        self.latent_dim, self.lr, self.betas = int(latent_dim), float(lr), tuple(betas)
        self.d_steps = int(d_steps)
        self.real_target, self.fake_target = 1.0 - label_smoothing, float(fake_label)
        self.instance_noise_std, self.instance_noise_kimg = float(instance_noise), float(instance_noise_kimg)

    @property
    @abc.abstractmethod
    def generator(self) -> nn.Module: ...

    @property
    @abc.abstractmethod
    def discriminator(self) -> nn.Module: ...

    # ----------------------------------------------------------------- GenerativeModule
    def sampling_network(self) -> nn.Module:
        return self.generator

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return (self.latent_dim,)

    def generate(self, net, n, labels, generator, noise=None, **options) -> Tensor:
        if options:
            raise ValueError(f"{type(self).__name__}.sample takes no options {sorted(options)}")
        z = noise if noise is not None else torch.randn(n, self.latent_dim, device=self.device,
                                                        generator=generator)
        return net(z.to(self.device), labels)

    # ----------------------------------------------------------------- training
    def configure_optimizers(self):
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=self.betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)
        return [opt_g, opt_d]

    def d_input(self, images: Tensor) -> Tensor:
        """What the discriminator sees of an image (real or fake): here, annealed instance noise."""
        std = annealed(self.instance_noise_std, self.images_seen, self.instance_noise_kimg)
        return instance_noise(images, std)

    def training_step(self, batch, batch_idx: int) -> None:
        real, labels = batch
        labels = labels if self.is_conditional else None
        opt_g, opt_d = self.optimizers()
        g_turn = self.batches_seen % self.d_steps == 0  # batches_seen counts this batch
        z = torch.randn(real.shape[0], self.latent_dim, device=self.device)
        with torch.set_grad_enabled(g_turn):  # one generator forward serves both steps
            fake = self.generator(z, labels)

        with self.toggled_optimizer(opt_d):
            real_logits = self.discriminator(self.d_input(real), labels)
            fake_logits = self.discriminator(self.d_input(fake.detach()), labels)
            d_loss = discriminator_bce(real_logits, fake_logits, self.real_target, self.fake_target)
            self.check_finite(d_loss=d_loss)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
        log = {}
        if self.logging_step():
            log = {"train/d_loss": d_loss.detach(),
                   "train/d_real": (real_logits.detach() > 0).float().mean(),   # fraction D calls real
                   "train/d_fake": (fake_logits.detach() > 0).float().mean()}   # fraction D calls fake real

        if g_turn:
            with self.toggled_optimizer(opt_g):
                g_loss = generator_nonsaturating(self.discriminator(self.d_input(fake), labels))
                self.check_finite(g_loss=g_loss)
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(g_loss)
                opt_g.step()
            if log:
                log["train/g_loss"] = g_loss.detach()
        self.update_ema()
        if log:
            self.log_dict(log, on_step=True, on_epoch=False, prog_bar=True)


class DCGAN(GANModule):
    """DCGAN for 28, 32 and 64 px (and 16, 56, 128...), optionally class-conditional."""

    def __init__(self, image_shape, num_classes: int = 0, ema: dict | None = None, base_channels: int = 64,
                 label_dim: int = 50, **gan_options):
        super().__init__(image_shape, num_classes, ema, **gan_options)
        channels, resolution, _ = self.image_shape
        try:
            base_grid(resolution)
        except ValueError as e:
            raise ConfigError("data.resolution", str(e)) from None
        if base_channels < 1:
            raise ConfigError("model.base_channels", f"must be positive, got {base_channels}")
        self._generator = DCGANGenerator(self.latent_dim, channels, resolution, base_channels,
                                         num_classes, label_dim)
        self._discriminator = DCGANDiscriminator(channels, resolution, base_channels, num_classes)
        self.init_ema()

    @property
    def generator(self) -> nn.Module:
        return self._generator

    @property
    def discriminator(self) -> nn.Module:
        return self._discriminator
