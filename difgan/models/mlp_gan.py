"""Seed 003's GAN baselines on the adversarial loop of ``GANModule``: a fully connected GAN (Goodfellow et
al. 2014) with a 100-dimensional z, and the "high-dimensional GAN" whose z has the image's dimension
(``latent_dim: image`` -> C*H*W), the comparison DifGAN was proposed against."""

from __future__ import annotations

import math

from difgan.errors import ConfigError
from difgan.models.gan import GANModule
from difgan.nets.mlp import MLPDiscriminator, MLPGenerator
from difgan.validation import require


class MLPGAN(GANModule):
    def __init__(self, image_shape, num_classes: int = 0, ema: dict | None = None,
                 latent_dim: int | str = 100, g_hidden=(256, 512, 1024), d_hidden=(1024, 512, 256),
                 dropout: float = 0.3, **gan_options):
        if num_classes:
            raise ConfigError("model.conditional", "the MLP GAN is unconditional")
        if latent_dim == "image":
            latent_dim = math.prod(int(s) for s in image_shape)
        if not isinstance(latent_dim, int):
            raise ConfigError("model.latent_dim",
                              f"must be a positive integer or 'image', got {latent_dim!r}")
        super().__init__(image_shape, num_classes, ema, latent_dim=latent_dim, **gan_options)
        require("model.dropout", dropout, 0 <= dropout < 1)
        for key, widths in (("g_hidden", g_hidden), ("d_hidden", d_hidden)):
            require(f"model.{key}", widths, len(widths) >= 1 and all(int(w) >= 1 for w in widths))
        self._generator = MLPGenerator(self.latent_dim, self.image_shape, g_hidden)
        self._discriminator = MLPDiscriminator(self.image_shape, d_hidden, dropout)
        self.init_ema()
