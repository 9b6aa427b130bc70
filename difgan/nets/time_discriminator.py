"""A time-conditioned convolutional discriminator D(x, t) (or D(x, t | c) with c concatenated on channels),
for the hybrids that judge noisy or intermediate images: DifGAN's D(z_k, k) and DDGAN's D(x_{t-1}, t | x_t).

DCGAN's layout of stride-2 4x4 convolutions (4 or 7 px base grid, widths doubling on the way down) with
LeakyReLU(0.2) and no batch normalisation (R1 needs per-sample gradients), and the time embedding (learned
table or sinusoidal, ``difgan.nets.embeddings.time_embedding``) projected to a per-channel bias after every
convolution, so every layer knows the noise level it is judging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difgan.nets.dcgan import base_grid
from difgan.nets.embeddings import time_embedding


class TimeConditionedDiscriminator(nn.Module):
    """``forward(x (B, C, H, W), t (B,) int, cond (B, C', H, W) or None) -> (B,)`` logits."""

    def __init__(self, in_channels: int, resolution: int, base_channels: int = 32, num_steps: int = 4,
                 time_embedding_kind: str = "learned", cond_channels: int = 0, max_width: int = 512):
        super().__init__()
        base, k = base_grid(resolution)
        self.cond_channels = int(cond_channels)
        emb_dim = 4 * base_channels
        self.time_embed = time_embedding(time_embedding_kind, base_channels, emb_dim, num_steps)
        widths = [min(base_channels * 2**i, max_width) for i in range(k)]
        self.convs = nn.ModuleList()
        self.time_bias = nn.ModuleList()
        ch = in_channels + self.cond_channels
        for w in widths:
            self.convs.append(nn.Conv2d(ch, w, 4, 2, 1))
            self.time_bias.append(nn.Linear(emb_dim, w))
            ch = w
        self.out = nn.Conv2d(ch, 1, base, 1, 0)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.cond_channels:
            if cond is None:
                raise ValueError("this discriminator takes a conditioning image (cond)")
            x = torch.cat([x, cond], dim=1)
        emb = F.silu(self.time_embed(t))
        h = x
        for conv, bias in zip(self.convs, self.time_bias):
            h = F.leaky_relu(conv(h) + bias(emb)[:, :, None, None], 0.2)
        return self.out(h).flatten()
