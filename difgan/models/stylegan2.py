"""StyleGAN2 training (Karras et al. 2020) on the suite's GAN loop: the networks are in
difgan/nets/stylegan2.py, the penalties in difgan/losses.py; this module wires them into ``GANModule``'s
steps.

- loss: non-saturating logistic (``model.loss: logistic``);
- lazy R1 on reals every ``r1_interval`` batches, gamma / 2 * E||grad D(x)||^2 (a D-phase ``Regularizer``);
- path-length regularisation every ``pl_interval`` batches from ``pl_start_kimg`` on, on ``1 /
  pl_batch_shrink`` of the batch, against a running mean with decay ``pl_decay`` kept in the persistent buffer
  ``pl_mean`` (so checkpoints and resume carry it);
- style mixing: with probability ``mixing_prob`` a batch's styles switch to a second w from a random layer on;
- the mapping network learns at ``mapping_lr`` (absolute) or ``lr * mapping_lr_mult``, as its own Adam
  parameter group. Under Adam this equals the paper's run-time weight scaling by the multiplier (Adam's step
  does not depend on the gradient's scale), so the layers themselves are plain equalized-lr layers;
- Adam (0, 0.99) with the lazy-regularisation correction of lr and betas (``GANModule``), generator EMA;
- sampling options ``truncation_psi`` (1: none; 0: the mean-w image) and ``noise_mode`` (random | const |
  none); latent spaces z and w (``map_latent``/``sample_from_w``) for ``difgan.interpolate``.

All intervals count the module's own ``batches_seen`` (PITFALLS: GAN step counting).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difgan.losses import path_length_penalty, path_lengths, r1_penalty
from difgan.models.gan import GANModule, GANStep, Regularizer
from difgan.nets.stylegan2 import (
    NOISE_MODES,
    UPSAMPLE_MODES,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    mix_styles,
    stylegan_resolutions,
    truncate,
)
from difgan.validation import check_choice, check_int, check_resolution, require

SAMPLE_OPTIONS = ("truncation_psi", "noise_mode")


class StyleGAN2(GANModule):
    def __init__(self, image_shape, num_classes: int = 0, ema: dict | None = None, latent_dim: int = 512,
                 w_dim: int = 512, mapping_layers: int = 8, mapping_lr_mult: float = 0.01,
                 mapping_lr: float | None = None, channel_base: int = 32768, channel_max: int = 512,
                 upsample: str = "fir", mbstd_group_size: int = 4, mbstd_features: int = 1,
                 r1_gamma: float = 10.0, r1_interval: int = 16, pl_weight: float = 2.0, pl_interval: int = 4,
                 pl_start_kimg: float = 0.0, pl_batch_shrink: int = 2, pl_decay: float = 0.01,
                 mixing_prob: float = 0.9, w_avg_beta: float = 0.995, truncation_psi: float = 1.0,
                 noise_mode: str = "random", lr: float = 2e-3, betas=(0.0, 0.99), loss: str = "logistic",
                 **gan_options):
        super().__init__(image_shape, num_classes, ema, latent_dim=latent_dim, lr=lr, betas=betas, loss=loss,
                         **gan_options)
        channels, resolution, _ = self.image_shape
        check_resolution(stylegan_resolutions, resolution)
        check_int("model.w_dim", w_dim)
        check_int("model.mapping_layers", mapping_layers)
        check_int("model.channel_base", channel_base)
        check_int("model.channel_max", channel_max)
        check_choice("model.upsample", upsample, UPSAMPLE_MODES)
        check_int("model.mbstd_group_size", mbstd_group_size)
        check_int("model.mbstd_features", mbstd_features)
        check_int("model.r1_interval", r1_interval)
        check_int("model.pl_interval", pl_interval)
        check_int("model.pl_batch_shrink", pl_batch_shrink)
        require("model.mapping_lr_mult", mapping_lr_mult, mapping_lr_mult > 0)
        require("model.mapping_lr", mapping_lr, mapping_lr is None or mapping_lr > 0)
        require("model.r1_gamma", r1_gamma, r1_gamma >= 0)
        require("model.pl_weight", pl_weight, pl_weight >= 0)
        require("model.pl_start_kimg", pl_start_kimg, pl_start_kimg >= 0)
        require("model.pl_decay", pl_decay, 0 < pl_decay <= 1)
        require("model.mixing_prob", mixing_prob, 0 <= mixing_prob <= 1)
        require("model.w_avg_beta", w_avg_beta, 0 <= w_avg_beta < 1)
        require("model.truncation_psi", truncation_psi, 0 <= truncation_psi <= 1, "in [0, 1]")
        check_choice("model.noise_mode", noise_mode, NOISE_MODES)
        c4 = min(channel_base // 4, channel_max)
        require("model.mbstd_features", mbstd_features, c4 % mbstd_features == 0,
                f"must divide the 4x4 width {c4}")
        self.mapping_lr_mult, self.mapping_lr = float(mapping_lr_mult), mapping_lr
        self.r1_gamma, self.r1_interval = float(r1_gamma), int(r1_interval)
        self.pl_weight, self.pl_interval = float(pl_weight), int(pl_interval)
        self.pl_start_kimg, self.pl_decay = float(pl_start_kimg), float(pl_decay)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.mixing_prob = float(mixing_prob)
        self.sampling_defaults = {"truncation_psi": float(truncation_psi), "noise_mode": noise_mode}
        self.register_buffer("pl_mean", torch.zeros((), dtype=torch.float64))  # path-length running mean
        self._generator = StyleGAN2Generator(self.latent_dim, w_dim, channels, resolution, mapping_layers,
                                             channel_base, channel_max, self.num_classes, upsample,
                                             w_avg_beta)
        self._discriminator: nn.Module = StyleGAN2Discriminator(
            channels, resolution, channel_base, channel_max, self.num_classes, mbstd_group_size,
            mbstd_features)
        self.init_ema()

    # ----------------------------------------------------------------- optimizers and regularisers
    def param_groups(self, network: str) -> list[dict]:
        if network == "d":
            return super().param_groups(network)
        mapping = list(self.generator.mapping.parameters())
        ids = {id(p) for p in mapping}
        rest = [p for p in self.generator.parameters() if id(p) not in ids]
        lr = self.optim_settings["g"]["lr"]
        mapping_lr = self.mapping_lr if self.mapping_lr is not None else lr * self.mapping_lr_mult
        return [{"params": rest}, {"params": mapping, "lr": float(mapping_lr)}]

    def regularizers(self) -> list[Regularizer]:
        regs = []
        if self.r1_gamma > 0:
            regs.append(Regularizer("r1", "d", self.r1_interval, self.r1_loss))
        if self.pl_weight > 0:
            regs.append(Regularizer("pl", "g", self.pl_interval, self.pl_loss,
                                    active=lambda: self.images_seen >= self.pl_start_kimg * 1000))
        return regs

    def r1_loss(self, step: GANStep) -> Tensor:
        real = step.real.detach().requires_grad_(True)
        logits = self.discriminate(step, real, real=True)
        return r1_penalty(logits, real) * (self.r1_gamma / 2)

    def pl_loss(self, step: GANStep) -> Tensor:
        n = max(1, step.real.shape[0] // self.pl_batch_shrink)
        labels = None if step.labels is None else step.labels[:n]
        ws = self.mixed_styles(n, labels)
        images = self.generator.synthesis(ws)
        penalty, self.pl_mean = path_length_penalty(path_lengths(images, ws), self.pl_mean, self.pl_decay)
        return penalty * self.pl_weight

    # ----------------------------------------------------------------- the overridable steps
    def mixed_styles(self, n: int, labels: Tensor | None, update_w_avg: bool = False) -> Tensor:
        """ws (n, num_ws, w_dim) for fresh z; with probability ``mixing_prob`` a second w takes over from a
        random layer in [1, num_ws)."""
        g = self.generator
        ws = g.map(torch.randn(n, self.latent_dim, device=self.device), labels, update_w_avg=update_w_avg)
        if self.mixing_prob > 0 and g.num_ws > 1 and float(torch.rand(())) < self.mixing_prob:
            cutoff = int(torch.randint(1, g.num_ws, ()))
            ws = mix_styles(ws, g.map(torch.randn(n, self.latent_dim, device=self.device), labels), cutoff)
        return ws

    def make_fake(self, step: GANStep) -> Tensor:
        return self.generator.synthesis(self.mixed_styles(step.real.shape[0], step.labels, update_w_avg=True))

    def extra_logs(self) -> dict:
        return {"train/pl_mean": float(self.pl_mean)} if self.pl_weight > 0 else {}

    # ----------------------------------------------------------------- sampling
    sample_option_names = SAMPLE_OPTIONS
    latent_spaces = ("z", "w")

    def _options(self, options: dict) -> dict:
        self.check_sample_options(options)
        opts = {**self.sampling_defaults, **{k: v for k, v in options.items() if v is not None}}
        if not 0 <= float(opts["truncation_psi"]) <= 1:
            raise ValueError(f"truncation_psi must lie in [0, 1], got {opts['truncation_psi']}")
        if opts["noise_mode"] not in NOISE_MODES:
            raise ValueError(f"unknown noise_mode {opts['noise_mode']!r}; valid: {', '.join(NOISE_MODES)}")
        return opts

    def deterministic_sample_options(self) -> dict:
        return {"noise_mode": "const"}

    def sample_protocol(self, **options) -> dict:
        return self._options(options)

    def generate(self, net, n, labels, generator, noise=None, **options) -> Tensor:
        opts = self._options(options)
        z = noise.to(self.device) if noise is not None else self.draw_noise(n, generator)
        return net(z, labels, truncation_psi=float(opts["truncation_psi"]), noise_mode=opts["noise_mode"],
                   generator=generator)

    @torch.no_grad()
    def map_latent(self, z: Tensor, labels: Tensor | None = None, *, use_ema: bool = True) -> Tensor:
        with self.sampling_weights(use_ema) as net:
            return net.map(z.to(self.device), labels)[:, 0]

    @torch.no_grad()
    def sample_from_w(self, w: Tensor, labels: Tensor | None = None, *, use_ema: bool = True,
                      **options) -> Tensor:
        """Images from w (B, w_dim); ``noise_mode`` defaults to const here, so strips along w change only
        with w."""
        opts = self._options({"noise_mode": "const", **options})
        with self.sampling_weights(use_ema) as net:
            w = w.to(self.device)
            w = truncate(w, net.w_avg, float(opts["truncation_psi"]))
            ws = w[:, None].expand(-1, net.num_ws, -1)
            return net.synthesis(ws, opts["noise_mode"]).clamp(-1, 1)
