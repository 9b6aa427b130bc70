"""Adversarial training with Lightning's manual optimization, as small overridable steps; DCGAN on it.

``GANModule.training_step`` runs one batch:

1. ``make_fake(step)``: the generator's output for this batch (``step`` holds the real batch, labels and
   anything a model adds, e.g. DDGAN's x_t and t);
2. the discriminator update: ``discriminator_loss(step)`` calls ``discriminate(step, images, real=...)`` on
   reals and detached fakes, which calls the discriminator with ``discriminator_inputs(...)`` (images and
   labels here; Diffusion-GAN adds (x_t, t), DDGAN (x_{t-1}, x_t, t)), and ``d_loss`` (``model.loss``);
3. ``after_d_step(step, real_logits, fake_logits)``: controllers that read D's verdict (adaptive
   diffusion);
4. lazy regularisers of D (``regularizers()`` with phase "d"), each on its own batch interval;
5. every ``d_steps``-th batch, the generator update ``generator_loss(step)`` (``g_loss``), then lazy
   regularisers of G.

Each update goes through ``_update`` (finite check, zero_grad, backward, step). Optimizers come from
``optim.g`` / ``optim.d`` (lr, betas, eps, weight_decay; unset keys fall back to ``lr``/``betas``), with the
lazy-regularisation correction of lr and betas (Karras et al. 2020, appendix B) when a network has a lazy
regulariser, and extra parameter groups from ``param_groups(name)`` (StyleGAN2's mapping network).

Lightning's ``global_step`` counts optimizer steps (two or more per batch); intervals here count the suite's
own ``batches_seen`` (PITFALLS: GAN step counting).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from difgan.errors import ConfigError
from difgan.losses import LOSSES, annealed, discriminator_bce, instance_noise
from difgan.models.base import GenerativeModule
from difgan.nets.dcgan import DCGANDiscriminator, DCGANGenerator, base_grid
from difgan.validation import check_int, check_resolution, require

OPTIM_KEYS = ("lr", "betas", "eps", "weight_decay")


@dataclass
class GANStep:
    """One batch's state, shared by the steps of ``training_step``."""

    real: Tensor
    labels: Tensor | None
    fake: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # model-specific: t, x_t, trajectories, ...


@dataclass
class Regularizer:
    """A lazy regulariser: ``loss(step)`` is added on batches where ``batches_seen % interval == 0``
    (and ``active()``), multiplied by ``interval`` so its expected strength does not depend on it."""

    name: str
    phase: str  # "d" or "g"
    interval: int
    loss: Callable[[GANStep], Tensor]
    active: Callable[[], bool] = lambda: True


class GANModule(GenerativeModule, abc.ABC):
    def __init__(self, image_shape, num_classes: int = 0, ema: dict | None = None, latent_dim: int = 100,
                 lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999), optim: dict | None = None,
                 loss: str = "bce", d_steps: int = 1, label_smoothing: float = 0.0, fake_label: float = 0.0,
                 instance_noise: float = 0.0, instance_noise_kimg: float = 0.0):
        super().__init__(image_shape, num_classes, ema)
        self.automatic_optimization = False
        check_int("model.latent_dim", latent_dim)
        require("model.lr", lr, lr > 0)
        require("model.d_steps", d_steps, d_steps >= 1)
        require("model.label_smoothing", label_smoothing, 0 <= label_smoothing < 0.5)
        require("model.fake_label", fake_label, 0 <= fake_label < 0.5)
        require("model.instance_noise", instance_noise, instance_noise >= 0)
        require("model.instance_noise_kimg", instance_noise_kimg, instance_noise_kimg >= 0)
        if loss not in LOSSES:
            raise ConfigError("model.loss", f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
        if loss != "bce" and (label_smoothing or fake_label):
            raise ConfigError("model.label_smoothing", f"label smoothing applies to loss=bce, not {loss!r}")
        self.latent_dim = int(latent_dim)
        self.loss_name = loss
        self.optim_settings = self._optim_settings(optim, float(lr), tuple(betas))
        self.d_steps = int(d_steps)
        self.real_target, self.fake_target = 1.0 - label_smoothing, float(fake_label)
        self.instance_noise_std, self.instance_noise_kimg = float(instance_noise), float(instance_noise_kimg)

    @staticmethod
    def _optim_settings(optim: dict | None, lr: float, betas: tuple[float, float]) -> dict[str, dict]:
        optim = dict(optim or {})
        unknown = sorted(set(optim) - {"g", "d"})
        if unknown:
            raise ConfigError(f"model.optim.{unknown[0]}", "unknown network; valid: g, d")
        settings = {}
        for name in ("g", "d"):
            node = dict(optim.get(name) or {})
            bad = sorted(set(node) - set(OPTIM_KEYS))
            if bad:
                raise ConfigError(f"model.optim.{name}.{bad[0]}",
                                  f"unknown key; valid: {', '.join(OPTIM_KEYS)}")
            s = {"lr": lr, "betas": betas, "eps": 1e-8, "weight_decay": 0.0,
                 **{k: v for k, v in node.items() if v is not None}}
            require(f"model.optim.{name}.lr", s["lr"], float(s["lr"]) > 0)
            b = tuple(float(v) for v in s["betas"])
            require(f"model.optim.{name}.betas", s["betas"], len(b) == 2 and all(0 <= v < 1 for v in b))
            settings[name] = {"lr": float(s["lr"]), "betas": b, "eps": float(s["eps"]),
                              "weight_decay": float(s["weight_decay"])}
        return settings

    # Subclasses build their two networks into ``self._generator`` and ``self._discriminator``.
    @property
    def generator(self) -> nn.Module:
        return self._generator

    @property
    def discriminator(self) -> nn.Module:
        return self._discriminator

    # ----------------------------------------------------------------- GenerativeModule
    def sampling_network(self) -> nn.Module:
        return self.generator

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return (self.latent_dim,)

    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Initial noise for ``n`` samples (z ~ N(0, I) of ``noise_shape``), on this module's device."""
        if generator is None:
            return torch.randn(n, *self.noise_shape, device=self.device)
        return torch.randn(n, *self.noise_shape, generator=generator, device=generator.device).to(self.device)

    def generate(self, net, n, labels, generator, noise=None, **options) -> Tensor:
        self.check_sample_options(options)
        z = noise.to(self.device) if noise is not None else self.draw_noise(n, generator)
        return net(z, labels)

    # ----------------------------------------------------------------- optimizers
    def param_groups(self, network: str) -> list[dict]:
        """Parameter groups of the "g" or "d" optimizer; a group may set its own ``lr`` (e.g. a mapping
        network's), which the lazy-regularisation correction then scales too."""
        net = self.generator if network == "g" else self.discriminator
        return [{"params": [p for p in net.parameters() if p.requires_grad]}]

    def regularizers(self) -> list[Regularizer]:
        """Lazy regularisers (R1, path length, ...); none by default."""
        return []

    def lazy_ratio(self, network: str) -> float:
        """interval / (interval + 1) for a network with a lazy regulariser (interval > 1), else 1."""
        intervals = [r.interval for r in self.regularizers() if r.phase == network and r.interval > 1]
        return min(intervals) / (min(intervals) + 1) if intervals else 1.0

    def build_optimizer(self, network: str) -> torch.optim.Optimizer:
        s = self.optim_settings[network]
        c = self.lazy_ratio(network)
        groups = []
        for group in self.param_groups(network):
            group = dict(group)
            group["lr"] = group.get("lr", s["lr"]) * c
            groups.append(group)
        betas = tuple(b**c for b in s["betas"])
        return torch.optim.Adam(groups, lr=s["lr"] * c, betas=betas, eps=s["eps"],
                                weight_decay=s["weight_decay"])

    def configure_optimizers(self):
        return [self.build_optimizer("g"), self.build_optimizer("d")]

    # ----------------------------------------------------------------- the overridable steps
    def make_fake(self, step: GANStep) -> Tensor:
        """The generator's output for this batch (built once; the D step detaches it)."""
        z = torch.randn(step.real.shape[0], self.latent_dim, device=self.device)
        return self.generator(z, step.labels)

    def d_input(self, images: Tensor) -> Tensor:
        """What the discriminator sees of an image (real or fake): here, annealed instance noise."""
        std = annealed(self.instance_noise_std, self.images_seen, self.instance_noise_kimg)
        return instance_noise(images, std)

    def discriminator_inputs(self, step: GANStep, images: Tensor, real: bool) -> tuple:
        """The positional arguments the discriminator is called with for ``images``."""
        return self.d_input(images), step.labels

    def discriminate(self, step: GANStep, images: Tensor, real: bool) -> Tensor:
        return self.discriminator(*self.discriminator_inputs(step, images, real))

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        if self.loss_name == "bce":
            return discriminator_bce(real_logits, fake_logits, self.real_target, self.fake_target)
        return LOSSES[self.loss_name][0](real_logits, fake_logits)

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        return LOSSES[self.loss_name][1](fake_logits)

    def real_images(self, step: GANStep) -> Tensor:
        """What the discriminator is shown as real: the batch (DDGAN: its noised x_{t-1})."""
        return step.real

    def discriminator_loss(self, step: GANStep) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, real logits, fake logits) of the discriminator update."""
        real_logits = self.discriminate(step, self.real_images(step), real=True)
        fake_logits = self.discriminate(step, step.fake.detach(), real=False)
        return self.d_loss(real_logits, fake_logits), real_logits, fake_logits

    def generator_loss(self, step: GANStep) -> Tensor:
        return self.g_loss(self.discriminate(step, step.fake, real=False))

    def after_d_step(self, step: GANStep, real_logits: Tensor, fake_logits: Tensor) -> None:
        """Runs after every discriminator update (adaptive augmentation controllers); nothing here."""

    def extra_logs(self) -> dict[str, Tensor | float]:
        """Model-specific values added to the step logs on logging batches."""
        return {}

    # ----------------------------------------------------------------- the loop
    def _update(self, optimizer, loss: Tensor, name: str) -> None:
        self.check_finite(**{name: loss})
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def _regularize(self, phase: str, optimizer, step: GANStep, log: dict | None) -> None:
        for reg in self.regularizers():
            if reg.phase != phase or self.batches_seen % reg.interval != 0 or not reg.active():
                continue
            with self.toggled_optimizer(optimizer):
                value = reg.loss(step)
                self._update(optimizer, value * reg.interval, reg.name)
            if log is not None:
                log[f"train/{reg.name}"] = value.detach()

    def training_step(self, batch, batch_idx: int) -> None:
        real, labels = batch
        step = GANStep(real, labels if self.is_conditional else None)
        opt_g, opt_d = self.optimizers()[:2]
        g_turn = self.batches_seen % self.d_steps == 0  # batches_seen counts this batch
        with torch.set_grad_enabled(g_turn):  # one generator forward serves both updates
            step.fake = self.make_fake(step)
        log: dict | None = {} if self.logging_step() else None

        with self.toggled_optimizer(opt_d):
            d_loss, real_logits, fake_logits = self.discriminator_loss(step)
            self._update(opt_d, d_loss, "d_loss")
        self.after_d_step(step, real_logits.detach(), fake_logits.detach())
        if log is not None:
            log.update({"train/d_loss": d_loss.detach(),
                        "train/d_real": (real_logits.detach() > 0).float().mean(),  # fraction D calls real
                        "train/d_fake": (fake_logits.detach() > 0).float().mean()})  # fakes D calls real
        self._regularize("d", opt_d, step, log)

        if g_turn:
            with self.toggled_optimizer(opt_g):
                g_loss = self.generator_loss(step)
                self._update(opt_g, g_loss, "g_loss")
            if log is not None:
                log["train/g_loss"] = g_loss.detach()
            self._regularize("g", opt_g, step, log)
        self.update_ema()
        if log:
            log.update(self.extra_logs())
            self.log_dict(log, on_step=True, on_epoch=False, prog_bar=True)


class DCGAN(GANModule):
    """DCGAN for 28, 32 and 64 px (and 16, 56, 128...), optionally class-conditional."""

    def __init__(self, image_shape, num_classes: int = 0, ema: dict | None = None, base_channels: int = 64,
                 label_dim: int = 50, **gan_options):
        super().__init__(image_shape, num_classes, ema, **gan_options)
        self._generator, self._discriminator = self.build_networks(base_channels, label_dim)
        self.init_ema()

    def build_networks(self, base_channels: int, label_dim: int) -> tuple[nn.Module, nn.Module]:
        channels, resolution, _ = self.image_shape
        check_resolution(base_grid, resolution)
        check_int("model.base_channels", base_channels)
        return (DCGANGenerator(self.latent_dim, channels, resolution, base_channels, self.num_classes,
                               label_dim),
                DCGANDiscriminator(channels, resolution, base_channels, self.num_classes))
