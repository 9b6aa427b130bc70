"""DDPM (Ho et al. 2020): a UNet trained to predict the noise in x_t, sampled with DDPM or DDIM.

Training (Lightning's automatic optimization): each image gets its own uniformly drawn timestep (seed 004's
lesson: one t per batch trains slower and worse), x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, and the
loss is the mean squared error between eps and the network's prediction (``train/loss``). Options: linear
learning-rate warmup over ``warmup_kimg`` thousand images, gradient-norm clipping (``grad_clip``; the
trainer's ``gradient_clip_val`` wins when set), EMA weights (``ema``) used for sampling.

Class-conditional models (``conditional: true`` in the config) embed the label next to the timestep and
replace it with a null class with probability ``cond_drop_prob``, so the same network is also the
unconditional model that classifier-free guidance needs.

Sampling options (``module.sample(n, labels, **options)``; defaults under ``sampling`` in the config):
``sampler`` ("ddpm" | "ddim"), ``sampling_steps`` (DDIM only; DDPM always runs all T), ``eta`` (DDIM
noise, 0..1), ``guidance_scale`` (classifier-free, conditional models), ``sigma`` (DDPM variance: "beta" |
"posterior"), ``spacing`` (DDIM timesteps), ``clip_x0`` (clip predicted x_0 to [-1, 1]), ``guidance``
(hooks ``(x_t, t, eps) -> eps``, e.g. discriminator guidance), ``trajectory_stride``.
``sample_trajectory`` also returns the intermediate x_t and x_0 predictions.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difgan.diffusion import (
    SAMPLERS,
    SCHEDULES,
    SIGMAS,
    SPACINGS,
    NoiseSchedule,
    Trajectory,
    ddim_timesteps,
    denoiser_eps_fn,
    guidance_hooks,
    hook_name,
    q_sample,
    sample_loop,
    sample_timesteps,
)
from difgan.errors import ConfigError
from difgan.models.base import GenerativeModule
from difgan.models.unet_config import build_unet, unet_options
from difgan.nets.unet import UNet
from difgan.validation import check_int, require

# The ``model.unet`` keys and their defaults: UNet's own keyword defaults (the one place they are written).
UNET_KEYS = ("channels", "channel_mult", "num_res_blocks", "attention_resolutions", "dropout",
             "attention_heads", "mid_attention")
UNET_DEFAULTS: dict[str, Any] = {k: inspect.signature(UNet).parameters[k].default for k in UNET_KEYS}
# Sampling defaults (``model.sampling.<key>: null`` in the yaml files means this value).
SAMPLING_DEFAULTS: dict[str, Any] = {
    "sampler": "ddim",
    "sampling_steps": 50,
    "eta": 0.0,
    "guidance_scale": 1.0,
    "sigma": "beta",
    "spacing": "linspace",
    "clip_x0": True,
}
SAMPLING_OPTIONS = (*SAMPLING_DEFAULTS, "guidance", "trajectory_stride")


class DDPM(GenerativeModule):
    def __init__(
        self,
        image_shape,
        num_classes: int = 0,
        ema: dict | None = None,
        timesteps: int = 1000,
        schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
        unet: dict | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        warmup_kimg: float = 0.0,
        grad_clip: float | None = 1.0,
        cond_drop_prob: float = 0.1,
        channels_last: bool = False,
        sampling: dict | None = None,
    ):
        super().__init__(image_shape, num_classes, ema)
        channels, height, width = self.image_shape
        if height != width:
            raise ConfigError("data.resolution", f"the UNet needs square images, got {height}x{width}")
        check_int("model.timesteps", timesteps)
        require("model.lr", lr, lr > 0)
        require("model.weight_decay", weight_decay, weight_decay >= 0)
        require("model.warmup_kimg", warmup_kimg, warmup_kimg >= 0)
        require("model.grad_clip", grad_clip, grad_clip is None or grad_clip >= 0)
        require("model.cond_drop_prob", cond_drop_prob, 0.0 <= cond_drop_prob < 1.0)
        if schedule not in SCHEDULES:
            raise ConfigError(
                "model.schedule", f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}"
            )
        try:
            self.schedule = NoiseSchedule.from_config(schedule, timesteps, beta_start, beta_end, cosine_s)
            self.schedule_name = schedule
        except ValueError as e:
            raise ConfigError(
                "model.beta_start" if schedule == "linear" else "model.cosine_s", str(e)
            ) from None
        if self.schedule.terminal_signal() > 0.1:
            warnings.warn(
                f"model: x_T keeps {self.schedule.terminal_signal():.0%} of the signal (sqrt(abar_T)) "
                f"with the {schedule} schedule at T={timesteps}; sampling starts from pure noise, so "
                "samples may be washed out. Scale beta_end with 1000/T or use the cosine schedule.",
                stacklevel=2,
            )

        self.unet_options = unet_options(UNET_DEFAULTS, unet)
        self.unet = self._build_unet(channels, height)
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        self.channels_last = bool(channels_last)

        self.lr, self.adam_betas, self.weight_decay = float(lr), tuple(betas), float(weight_decay)
        self.warmup_kimg, self.grad_clip = float(warmup_kimg), (float(grad_clip) if grad_clip else None)
        self.cond_drop_prob = float(cond_drop_prob)
        given = {k: v for k, v in (dict(sampling) if sampling else {}).items() if v is not None}
        defaults = {**SAMPLING_DEFAULTS, **given}
        if isinstance(defaults["sampling_steps"], int) and defaults["sampling_steps"] > timesteps:
            defaults["sampling_steps"] = timesteps  # the default step count is capped at T
        self.sampling_defaults = self._check_sampling(defaults, prefix="model.sampling.", error=ConfigError)
        self.init_ema()

    def _build_unet(self, channels: int, resolution: int) -> UNet:
        return build_unet(self.unet_options, channels, resolution, num_classes=self.num_classes)

    # ----------------------------------------------------------------- GenerativeModule
    def sampling_network(self) -> nn.Module:
        return self.unet

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return self.image_shape

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def _check_sampling(self, opts: dict, prefix: str = "", error=None) -> dict:
        """Validate sampling options; raises ``error(key, msg)`` (ConfigError) or ValueError."""

        def fail(key: str, msg: str):
            if error is not None:
                raise error(prefix + key, msg)
            raise ValueError(f"{key}: {msg}")

        unknown = set(opts) - set(SAMPLING_OPTIONS) - {"_trajectory"}
        if unknown:
            fail(sorted(unknown)[0], f"unknown sampling option; valid: {', '.join(SAMPLING_OPTIONS)}")
        if opts["sampler"] not in SAMPLERS:
            fail("sampler", f"unknown sampler {opts['sampler']!r}; valid: {', '.join(SAMPLERS)}")
        steps = opts.get("sampling_steps")
        if steps is not None:
            if not isinstance(steps, int) or not 1 <= steps <= self.num_timesteps:
                fail("sampling_steps", f"must be an integer in [1, {self.num_timesteps}], got {steps!r}")
            if opts["sampler"] == "ddim":
                try:
                    ddim_timesteps(self.num_timesteps, steps, opts["spacing"])
                except ValueError as e:
                    fail("spacing", str(e))
        if not 0.0 <= float(opts["eta"]) <= 1.0:
            fail("eta", f"must lie in [0, 1], got {opts['eta']!r}")
        scale = float(opts["guidance_scale"])
        if scale < 0 or not math.isfinite(scale):
            fail("guidance_scale", f"must be a non-negative number, got {opts['guidance_scale']!r}")
        if scale != 1.0 and not self.is_conditional:
            fail("guidance_scale", "classifier-free guidance needs a conditional model (conditional: true)")
        if opts["sigma"] not in SIGMAS:
            fail("sigma", f"must be one of {', '.join(SIGMAS)}, got {opts['sigma']!r}")
        if opts["spacing"] not in SPACINGS:
            fail("spacing", f"must be one of {', '.join(SPACINGS)}, got {opts['spacing']!r}")
        return opts

    def _resolve_sampling(self, options: dict) -> dict:
        """The config's sampling defaults overridden by the given (non-None) options, validated."""
        explicit_steps = options.get("sampling_steps") is not None
        opts = {**self.sampling_defaults, **{k: v for k, v in options.items() if v is not None}}
        if opts["sampler"] == "ddpm" and not explicit_steps:
            opts["sampling_steps"] = None  # the config's DDIM step count does not apply to DDPM
        return self._check_sampling(opts)

    sample_option_names = SAMPLING_OPTIONS
    has_trajectory = True

    def deterministic_sample_options(self) -> dict:
        """DDIM with eta 0 maps the initial noise to an image deterministically."""
        return {"sampler": "ddim", "eta": 0.0}

    def sample_protocol(self, **options) -> dict:
        """What ``sample(**options)`` would run, for metrics.json: sampler, network evaluations, schedule."""
        opts = self._resolve_sampling(options)
        steps = opts["sampling_steps"] if opts["sampling_steps"] is not None else self.num_timesteps
        protocol = {k: opts[k] for k in SAMPLING_DEFAULTS}
        protocol.update(sampling_steps=steps, timesteps=self.num_timesteps,
                        schedule=self.schedule_name)
        hooks = opts.get("guidance")
        if hooks is not None:
            protocol["guidance"] = [hook_name(g) for g in guidance_hooks(hooks)]
        if protocol["sampler"] == "ddpm":
            for key in ("eta", "spacing"):  # DDIM-only knobs
                protocol.pop(key)
        else:
            protocol.pop("sigma")
        return protocol

    def generate(self, net, n, labels, generator, noise=None, **options) -> Tensor:
        trajectory_box = options.pop("_trajectory", None)
        opts = self._resolve_sampling(options)
        if noise is not None:
            x_T = noise.to(self.device, torch.float32)
        elif generator is not None:
            x_T = torch.randn((n, *self.noise_shape), generator=generator, device=generator.device).to(
                self.device
            )
        else:
            x_T = torch.randn((n, *self.noise_shape), device=self.device)
        if self.channels_last:
            x_T = x_T.contiguous(memory_format=torch.channels_last)
        eps_fn = denoiser_eps_fn(net, labels, float(opts["guidance_scale"]), getattr(net, "null_label", None))
        result = sample_loop(
            eps_fn,
            self.schedule,
            x_T,
            opts["sampler"],
            steps=opts["sampling_steps"],
            eta=float(opts["eta"]),
            sigma=opts["sigma"],
            spacing=opts["spacing"],
            clip_x0=bool(opts["clip_x0"]),
            guidance=opts.get("guidance"),
            labels=labels,
            generator=generator,
            return_trajectory=trajectory_box is not None,
            trajectory_stride=int(opts.get("trajectory_stride") or 1),
        )
        if trajectory_box is not None:
            result, trajectory = result
            trajectory_box.append(trajectory)
        return result

    @torch.no_grad()
    def sample_trajectory(self, n: int, labels: Tensor | None = None, **kwargs) -> tuple[Tensor, Trajectory]:
        """``sample`` plus the ``Trajectory`` of intermediate x_t (every ``trajectory_stride``-th step,
        default every step) and x_0 predictions (seed 003's intermediate images)."""
        box: list[Trajectory] = []
        images = self.sample(n, labels, _trajectory=box, **kwargs)
        return images, box[0]

    # ----------------------------------------------------------------- training
    def predict_noise(self, x0: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One training draw: (t, true noise, x_t, predicted noise), one uniformly drawn t per image and
        label dropout for conditional models. Fine-tuning methods (``feedback``) build on it."""
        t = sample_timesteps(x0.shape[0], self.num_timesteps, x0.device)
        noise = torch.randn_like(x0)
        xt = q_sample(self.schedule, x0, t, noise)
        if self.unet.class_embed is not None and labels is not None:
            labels = self.unet.class_embed.drop_labels(labels, self.cond_drop_prob)
        return t, noise, xt, self.unet(xt, t, labels)

    def loss(self, x0: Tensor, labels: Tensor | None) -> Tensor:
        """The simple epsilon-prediction loss on a batch, one uniformly drawn t per image."""
        _, noise, _, eps = self.predict_noise(x0, labels)
        return F.mse_loss(eps, noise)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x0, labels = batch
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        loss = self.loss(x0, labels if self.is_conditional else None)
        self.check_finite(loss=loss)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(
            self.unet.parameters(), lr=self.lr, betas=self.adam_betas, weight_decay=self.weight_decay
        )
        if self.warmup_kimg <= 0:
            return opt
        ramp = self.warmup_kimg * 1000.0

        def warmup(_step: int) -> float:  # by images seen, so it does not change with batch size
            return min(1.0, (self.images_seen + 1) / ramp)

        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, warmup)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if gradient_clip_val is None and self.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.grad_clip)
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
