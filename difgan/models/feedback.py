"""Discriminator-feedback fine-tuning of a trained DDPM (seed 000, methods 1, 2, 3, 3.5 and 4).

``DDPMFeedback`` is a ``DDPM`` (same UNet, schedule, loss draw ``predict_noise`` and samplers) plus a
discriminator, trained with Lightning's manual optimization. It starts from a trained DDPM through
``model.pretrained`` (the DDPM checkpoint's EMA weights load into the UNet) and from a fresh discriminator,
or one trained by ``task=train_discriminator`` (``feedback.discriminator_ckpt``; its conv network is reused).

``feedback.method`` decides what the discriminator judges (real vs fake):

- ``final_image`` (method 1): clean training images vs fully denoised samples of a short differentiable
  DDIM chain (``chain_steps``), backpropagated through its last ``backprop_steps`` steps only (truncated
  backprop: memory holds ``backprop_steps`` UNet graphs whatever the chain length). D trains during the
  warm-up only, then stays frozen while the diffusion model is updated;
- ``final_image_joint`` (method 2): as 1, and D keeps training;
- ``noise`` (method 3): the true noise eps added at a training step vs the predicted eps_theta(x_t, t);
- ``noise_time`` (method 3.5, default; seed 000's best): as 3 with D conditioned on t;
- ``next_image`` (method 4): x_{t-1} from the predicted noise vs x_{t-1} from the true noise (the shared
  posterior step, same z for both), D conditioned on t.

Schedule: D alone for ``warmup_epochs`` epochs (1 in the seed), then both. Losses: BCE for D
(``discriminator_bce``), and for the diffusion model ``mse_weight`` * MSE(eps_theta, eps) + ``adv_weight`` *
non-saturating BCE (``generator_nonsaturating``); ``adv_weight: 0`` is plain DDPM training, ``mse_weight: 0``
the seed's pure-adversarial setting. Adam (0.5, 0.999), lr 1e-4 for D (``d_lr``) and ``model.lr`` (1e-5)
for the diffusion model (the seed's best). Counters count batches (``batches_seen``), not optimizer steps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difgan.diffusion import ddim_sample, ddpm_step
from difgan.errors import ConfigError
from difgan.losses import discriminator_bce, generator_nonsaturating
from difgan.models.ddpm import DDPM
from difgan.nets.time_discriminator import TimeConvDiscriminator
from difgan.validation import check_choice, check_int, require

METHODS = ("final_image", "final_image_joint", "noise", "noise_time", "next_image")
FEEDBACK_DEFAULTS: dict[str, Any] = {
    "method": "noise_time",
    "adv_weight": 0.1,
    "mse_weight": 1.0,
    "warmup_epochs": 1,
    "d_lr": 1e-4,
    "betas": (0.5, 0.999),
    "base_channels": 32,
    "depth": 3,
    "chain_steps": 10,
    "backprop_steps": 2,
    "discriminator_ckpt": None,
}
TIME_METHODS = ("noise_time", "next_image")


class DDPMFeedback(DDPM):
    def __init__(self, image_shape, num_classes: int = 0, feedback: dict | None = None, **ddpm_options):
        super().__init__(image_shape, num_classes, **ddpm_options)
        self.automatic_optimization = False
        fb = {**FEEDBACK_DEFAULTS, **(dict(feedback) if feedback else {})}
        unknown = sorted(set(fb) - set(FEEDBACK_DEFAULTS))
        if unknown:
            raise ConfigError(f"model.feedback.{unknown[0]}",
                              f"unknown key; valid: {', '.join(FEEDBACK_DEFAULTS)}")
        check_choice("model.feedback.method", fb["method"], METHODS)
        require("model.feedback.adv_weight", fb["adv_weight"], fb["adv_weight"] >= 0)
        require("model.feedback.mse_weight", fb["mse_weight"], fb["mse_weight"] >= 0)
        require("model.feedback.mse_weight", fb["mse_weight"], fb["mse_weight"] + fb["adv_weight"] > 0,
                "mse_weight and adv_weight cannot both be 0")
        check_int("model.feedback.warmup_epochs", fb["warmup_epochs"], minimum=0)
        require("model.feedback.d_lr", fb["d_lr"], fb["d_lr"] > 0)
        check_int("model.feedback.chain_steps", fb["chain_steps"])
        require("model.feedback.chain_steps", fb["chain_steps"], fb["chain_steps"] <= self.num_timesteps,
                f"at most T={self.num_timesteps}")
        check_int("model.feedback.backprop_steps", fb["backprop_steps"])
        require("model.feedback.backprop_steps", fb["backprop_steps"],
                fb["backprop_steps"] <= fb["chain_steps"], "at most chain_steps")
        self.feedback = fb
        self.method = fb["method"]
        channels, resolution, _ = self.image_shape
        time_conditioned = self.method in TIME_METHODS
        if fb["discriminator_ckpt"]:
            self.discriminator = self._trained_discriminator(fb["discriminator_ckpt"])
        else:
            try:
                self.discriminator = TimeConvDiscriminator(
                    channels, resolution, int(fb["base_channels"]), int(fb["depth"]), self.num_classes,
                    time_conditioned, self.num_timesteps)
            except ValueError as e:
                raise ConfigError("model.feedback.depth", str(e)) from None

    def _trained_discriminator(self, path) -> nn.Module:
        from difgan.models.discriminator import load_discriminator

        d = load_discriminator(path)
        if not isinstance(d.net, TimeConvDiscriminator):
            raise ConfigError("model.feedback.discriminator_ckpt", "needs a discriminator with backbone=conv")
        if tuple(d.image_shape) != tuple(self.image_shape) or d.schedule.num_timesteps != self.num_timesteps:
            raise ConfigError("model.feedback.discriminator_ckpt", f"{path} was trained on other images or "
                              "another T than this model's")
        net = d.net
        net.requires_grad_(True)
        return net.train()

    # ----------------------------------------------------------------- networks
    def networks(self) -> dict[str, nn.Module]:
        return {"sampling_network": self.unet, "discriminator": self.discriminator}

    def configure_optimizers(self):
        betas = tuple(float(b) for b in self.feedback["betas"])
        opt_g = torch.optim.Adam(self.unet.parameters(), lr=self.lr, betas=betas,
                                 weight_decay=self.weight_decay)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=float(self.feedback["d_lr"]),
                                 betas=betas)
        return [opt_g, opt_d]

    # ----------------------------------------------------------------- what D judges
    def _judge(self, x: Tensor, t: Tensor | None, labels: Tensor | None) -> Tensor:
        if self.discriminator.time_conditioned:
            t = t if t is not None else torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        else:
            t = None
        return self.discriminator(x, t, labels)

    def differentiable_sample(self, n: int, labels: Tensor | None) -> Tensor:
        """Samples of a ``chain_steps``-step DDIM chain (eta 0) with gradients through the UNet calls of
        the last ``backprop_steps`` steps only (truncated backprop)."""
        steps, k = int(self.feedback["chain_steps"]), int(self.feedback["backprop_steps"])
        calls = [0]

        def eps_fn(x: Tensor, t: Tensor) -> Tensor:
            i = calls[0]
            calls[0] += 1
            if i < steps - k:
                with torch.no_grad():
                    return self.unet(x, t, labels)
            return self.unet(x, t, labels)

        x_T = torch.randn((n, *self.image_shape), device=self.device)
        return ddim_sample(eps_fn, self.schedule, x_T, steps=steps, eta=0.0, clip_x0=True)

    def feedback_inputs(self, x0: Tensor, labels: Tensor | None
                        ) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """(real, fake, t for D or None, MSE of the batch's noise prediction); the fakes carry gradients
        to the UNet when gradients are enabled."""
        t, noise, xt, eps = self.predict_noise(x0, labels)
        mse = F.mse_loss(eps, noise)
        if self.method in ("noise", "noise_time"):
            return noise, eps, (t if self.method == "noise_time" else None), mse
        if self.method == "next_image":
            z = torch.randn_like(x0)
            sigma = self.sampling_defaults["sigma"]
            real, _ = ddpm_step(self.schedule, xt, t, noise, z, sigma=sigma, clip_x0=False)
            fake, _ = ddpm_step(self.schedule, xt, t, eps, z, sigma=sigma, clip_x0=False)
            return real, fake, t, mse
        return x0, self.differentiable_sample(x0.shape[0], labels), None, mse

    # ----------------------------------------------------------------- training
    def joint_phase(self) -> bool:
        return self.current_epoch >= int(self.feedback["warmup_epochs"])

    def training_step(self, batch, batch_idx: int) -> None:
        x0, labels = batch
        labels = labels if self.is_conditional else None
        opt_g, opt_d = self.optimizers()
        joint = self.joint_phase()
        train_d = not (joint and self.method == "final_image")
        with torch.set_grad_enabled(joint):  # the warm-up trains D only: no graph through the UNet
            real, fake, t, mse = self.feedback_inputs(x0, labels)
        logs: dict[str, Tensor] = {"train/mse": mse.detach()}

        if train_d:
            self.discriminator.requires_grad_(True)
            real_logits = self._judge(real.detach(), t, labels)
            fake_logits = self._judge(fake.detach(), t, labels)
            d_loss = discriminator_bce(real_logits, fake_logits)
            self.check_finite(d_loss=d_loss)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
            acc = 0.5 * ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean())
            logs.update({"train/d_loss": d_loss.detach(), "train/d_acc": acc.detach()})

        if joint:
            self.discriminator.requires_grad_(False)  # gradients flow through D to the fakes only
            adv = generator_nonsaturating(self._judge(fake, t, labels))
            w_mse, w_adv = float(self.feedback["mse_weight"]), float(self.feedback["adv_weight"])
            g_loss = w_mse * mse + w_adv * adv
            self.check_finite(g_loss=g_loss)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.grad_clip)
            opt_g.step()
            self.discriminator.requires_grad_(True)
            logs.update({"train/g_adv": adv.detach(), "train/g_loss": g_loss.detach()})
        self.update_ema()
        if self.logging_step():
            logs["train/joint"] = torch.tensor(float(joint))
            self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=True)
