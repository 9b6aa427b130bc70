"""Time-conditioned discriminators D(x_t, t[, y]) -> one logit per image (higher = more real).

Used by discriminator guidance (Kim et al. 2023; seed 002) and discriminator-feedback fine-tuning (seed 000).
Two backbones:

- ``TimeConvDiscriminator``: a small DCGAN-like stack of stride-2 convolutions trained from scratch. The
  timestep enters through the suite's ``TimestepEmbedding`` as a per-channel scale and shift of every block
  (FiLM), so ``time_conditioned=False`` gives a plain image (or noise) discriminator with the same layout
  (seed 000's method 3). Class-conditional models add a projection term <embed(y), h> (Miyato and Koyama
  2018) to the logit.
- ``UNetEncoderDiscriminator``: the frozen encoder (down path and middle) of a trained DDPM UNet as feature
  extractor with a small trained head: the role of the pretrained ADM classifier in Kim et al., built from
  the diffusion model the user already has. The encoder's weights never receive gradients.
- ``TimeConditionedDiscriminator``: DCGAN's layout without normalisation (R1 needs per-sample gradients), the
  time embedding (learned table or sinusoidal) as a per-channel bias after every convolution, and an optional
  conditioning image concatenated on channels: DifGAN's D(z_k, k) and DDGAN's D(x_{t-1}, t | x_t). With
  ``mbstd_group_size`` > 0, a minibatch-standard-deviation feature map joins the last grid before the output
  convolution (DDGAN's discriminators have it; a standard guard against a generator collapsing onto one
  image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difgan.nets.dcgan import base_grid
from difgan.nets.embeddings import TimestepEmbedding, time_embedding
from difgan.nets.minibatch_stddev import minibatch_stddev


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class _FiLMBlock(nn.Module):
    """conv (stride 2) -> GroupNorm -> (1 + scale(t)) * h + shift(t) -> LeakyReLU."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 4, 2, 1)
        self.norm = nn.GroupNorm(_groups(out_ch), out_ch)
        self.film = nn.Linear(emb_dim, 2 * out_ch) if emb_dim else None
        if self.film is not None:  # starts as the unconditioned block
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.norm(self.conv(x))
        if self.film is not None and emb is not None:
            scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return F.leaky_relu(h, 0.2)


class TimeConvDiscriminator(nn.Module):
    """``forward(x (B, C, H, W), t (B,) or None, labels (B,) or None) -> (B,)`` logits.

    ``depth`` stride-2 blocks (width ``base_channels * 2^i``), global average pooling, a linear logit.
    ``num_timesteps`` scales the sinusoidal embedding's input so any T spans the same frequencies."""

    def __init__(self, channels: int, resolution: int, base_channels: int = 32, depth: int = 3,
                 num_classes: int = 0, time_conditioned: bool = True, num_timesteps: int = 1000,
                 emb_dim: int = 64):
        super().__init__()
        if depth < 1 or resolution < 2 ** depth:
            raise ValueError(f"depth {depth} halves {resolution} px below 1 px")
        self.time_conditioned = bool(time_conditioned)
        self.num_classes = int(num_classes)
        self.time_embed = (TimestepEmbedding(emb_dim, emb_dim, scale=1000.0 / max(num_timesteps, 1))
                           if time_conditioned else None)
        e = emb_dim if time_conditioned else None
        widths = [base_channels * 2 ** i for i in range(depth)]
        blocks, ch = [], channels
        for w in widths:
            blocks.append(_FiLMBlock(ch, w, e))
            ch = w
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Linear(ch, 1)
        self.class_embed = nn.Embedding(num_classes, ch) if num_classes else None
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, 0.0, 0.02)

    def forward(self, x: Tensor, t: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        emb = None
        if self.time_embed is not None:
            if t is None:
                raise ValueError("this discriminator is time-conditioned: pass t")
            emb = self.time_embed(t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t)
        h = x
        for block in self.blocks:
            h = block(h, emb)
        h = h.mean(dim=(2, 3))
        logit = self.out(h).squeeze(1)
        if self.class_embed is not None and labels is not None:
            logit = logit + (self.class_embed(labels.long()) * h).sum(1)
        return logit


class UNetEncoderDiscriminator(nn.Module):
    """A frozen DDPM UNet's encoder (``UNet.encode``: down path and middle at (x_t, t, y)) and a trained head:
    conv -> GroupNorm -> SiLU -> average pool -> linear, plus a class projection for conditional models."""

    def __init__(self, unet: nn.Module, head_channels: int = 64, num_classes: int = 0):
        super().__init__()
        self.encoder = unet
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        with torch.no_grad():
            res, ch_in = unet.resolution, unet.in_channels
            probe = unet.encode(torch.zeros(1, ch_in, res, res), torch.zeros(1, dtype=torch.long))
        width = probe.shape[1]
        self.head = nn.Sequential(nn.Conv2d(width, head_channels, 3, padding=1),
                                  nn.GroupNorm(_groups(head_channels), head_channels), nn.SiLU())
        self.out = nn.Linear(head_channels, 1)
        self.class_embed = nn.Embedding(num_classes, head_channels) if num_classes else None

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: dropout off, always
        return self

    def forward(self, x: Tensor, t: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        if t is None:
            raise ValueError("the UNet encoder needs t")
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t
        h = self.head(self.encoder.encode(x, t, labels)).mean(dim=(2, 3))
        logit = self.out(h).squeeze(1)
        if self.class_embed is not None and labels is not None:
            logit = logit + (self.class_embed(labels.long()) * h).sum(1)
        return logit


class TimeConditionedDiscriminator(nn.Module):
    """``forward(x (B, C, H, W), t (B,) int, cond (B, C', H, W) or None) -> (B,)`` logits."""

    def __init__(self, in_channels: int, resolution: int, base_channels: int = 32, num_steps: int = 4,
                 time_embedding_kind: str = "learned", cond_channels: int = 0, max_width: int = 512,
                 mbstd_group_size: int = 0):
        super().__init__()
        base, k = base_grid(resolution)
        self.cond_channels = int(cond_channels)
        self.mbstd_group_size = int(mbstd_group_size)
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
        self.out = nn.Conv2d(ch + (1 if self.mbstd_group_size else 0), 1, base, 1, 0)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.cond_channels:
            if cond is None:
                raise ValueError("this discriminator takes a conditioning image (cond)")
            x = torch.cat([x, cond], dim=1)
        emb = F.silu(self.time_embed(t))
        h = x
        for conv, bias in zip(self.convs, self.time_bias):
            h = F.leaky_relu(conv(h) + bias(emb)[:, :, None, None], 0.2)
        if self.mbstd_group_size:
            h = minibatch_stddev(h, self.mbstd_group_size)
        return self.out(h).flatten()
