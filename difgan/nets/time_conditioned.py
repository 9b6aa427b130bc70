"""Time conditioning for any discriminator backbone by projection (Miyato and Koyama 2018), as Diffusion-GAN
needs: D(x_t, t) = D_backbone(x_t) + <h(x_t), e(t)> / sqrt(dim), with h the backbone's penultimate features
and e a learned or sinusoidal embedding of the diffusion step t.

A backbone provides ``features_and_logit(x, labels) -> (h (B, feature_dim), logit (B,))`` and
``feature_dim``. Called with ``t=None`` the wrapper is exactly the backbone (the same operations), which is
what lets a Diffusion-GAN with its augmentation switched off train bit-for-bit like its plain GAN.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from difgan.nets.embeddings import time_embedding


class TimeConditionedDiscriminator(nn.Module):
    def __init__(self, backbone: nn.Module, t_embedding: str, num_timesteps: int,
                 embed_dim: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(backbone.feature_dim)
        # t lies in {0, ..., num_timesteps}: a learned table needs num_timesteps + 1 rows
        self.t_embed = time_embedding(t_embedding, embed_dim or self.feature_dim, out_dim=self.feature_dim,
                                      num_steps=num_timesteps + 1)

    def forward(self, x: Tensor, labels: Tensor | None = None, t: Tensor | None = None) -> Tensor:
        if t is None:
            return self.backbone(x, labels)
        h, logit = self.backbone.features_and_logit(x, labels)
        return logit + (h * self.t_embed(t)).sum(dim=1) / math.sqrt(self.feature_dim)
