"""A DCGAN-style encoder-decoder with a time embedding: the cheap backbone of the few-step hybrids on a CPU.

Encoder: a 3x3 convolution to ``channels``, then stride-2 4x4 convolutions down to DCGAN's base grid
(4 px for 16, 32, 64 px; 7 px for 28 px), widths doubling (at most 8x); decoder: stride-2 4x4 transposed
convolutions back up, each adding the encoder's activation of the same size (U-Net-like additive skips);
a 3x3 output convolution (zero-initialised, so an untrained network outputs 0). After every convolution a
normalisation (``norm``), a per-channel bias from the embedding of t (learned or sinusoidal) and of an
optional vector ``cond`` (DDGAN's z, through a 2-layer mapping network), then LeakyReLU(0.2).

``norm``: ``group`` (GroupNorm, at most 8 groups: per sample), ``batch`` (``StepBatchNorm``: batch norm with
its own statistics and affine parameters for every timestep, so the steps of a chain never share running
statistics; DCGAN's normalisation, whose batch statistics amplify any difference between the samples of a
batch, which is what keeps a generator from collapsing onto one output) or ``none`` (without any
normalisation, a first version's tanh output saturated at black on the digits).

``forward(x (B, C, H, W), t (B,), labels=None, cond (B, cond_dim) or None) -> (B, out_channels, H, W)``,
the same call as the suite's UNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difgan.nets.dcgan import base_grid
from difgan.nets.embeddings import time_embedding
from difgan.nets.unet import norm_groups

NORMS = ("group", "batch", "none")


class StepBatchNorm(nn.Module):
    """BatchNorm2d with one set of statistics and affine parameters per timestep: a batch holding several
    timesteps is normalised group by group (DDGAN's random t), a batch at one timestep in one call (DifGAN's
    chain)."""

    def __init__(self, channels: int, num_steps: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(max(1, num_steps)))

    def forward(self, h: Tensor, t: Tensor) -> Tensor:
        steps = torch.unique(t)
        if steps.numel() == 1:
            return self.norms[int(steps)](h)
        out = torch.empty_like(h)
        for step in steps.tolist():
            mask = t == step
            out[mask] = self.norms[step](h[mask])
        return out


def make_norm(kind: str, channels: int, num_steps: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(norm_groups(channels, 8), channels)
    if kind == "batch":
        return StepBatchNorm(channels, num_steps)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: {', '.join(NORMS)}")


class EncoderDecoder(nn.Module):
    def __init__(self, in_channels: int, resolution: int, channels: int = 32,
                 time_embedding_kind: str = "learned", num_timesteps: int = 0, cond_dim: int = 0,
                 out_channels: int | None = None, norm: str = "group"):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        if norm == "batch" and num_timesteps < 1:
            raise ValueError("norm='batch' keeps statistics per timestep: give num_timesteps")
        _, k = base_grid(resolution)
        emb_dim = 4 * channels
        self.time_embed = time_embedding(time_embedding_kind, channels, emb_dim, num_timesteps)
        self.cond_embed = (nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                           if cond_dim > 0 else None)
        widths = [channels * min(2**i, 8) for i in range(k + 1)]  # widths[i]: at resolution / 2^i
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1) for i in range(k))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 4, 2, 1)
                                for i in reversed(range(k)))
        layer_widths = [widths[0], *widths[1:], *reversed(widths[:-1])]  # conv_in, down, up
        self.bias = nn.ModuleList(nn.Linear(emb_dim, w) for w in layer_widths)
        self.norms = nn.ModuleList(make_norm(norm, w, num_timesteps) for w in layer_widths)
        self.conv_out = nn.Conv2d(channels, out_channels or in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None,
                cond: Tensor | None = None) -> Tensor:
        emb = self.time_embed(t)
        if self.cond_embed is not None:
            if cond is None:
                raise ValueError("this network was built with cond_dim > 0: pass cond")
            emb = emb + self.cond_embed(cond)
        emb = F.silu(emb)
        layers = iter(zip(self.norms, self.bias))

        def act(h: Tensor) -> Tensor:
            norm, bias = next(layers)
            h = norm(h, t) if isinstance(norm, StepBatchNorm) else norm(h)
            return F.leaky_relu(h + bias(emb)[:, :, None, None], 0.2)

        h = act(self.conv_in(x))
        skips = [h]
        for conv in self.down:
            h = act(conv(h))
            skips.append(h)
        skips.pop()
        for conv in self.up:
            h = act(conv(h)) + skips.pop()
        return self.conv_out(h)
