"""Conditioning embeddings shared by every time- or class-conditioned network (the DDPM UNet, the
time-conditioned discriminators of Diffusion-GAN and discriminator guidance).

- ``sinusoidal_embedding``: Vaswani et al.'s position encoding of a (possibly fractional) timestep, in
  Ho et al.'s layout (sines then cosines, frequencies 10000^(-i / (half - 1))).
- ``TimestepEmbedding``: sinusoidal features through a 2-layer SiLU MLP (Ho et al.: dim -> 4 dim -> 4 dim).
- ``LearnedTimestepEmbedding``: a learned vector per discrete step (a lookup table) through the same MLP,
  for models with few steps (DifGAN, DDGAN); ``time_embedding(kind, ...)`` picks one of the two by name.
- ``ClassEmbedding``: a learned vector per class plus one extra "null" class (index ``num_classes``), the
  unconditional input of classifier-free guidance; labels < 0 (unlabelled) map to it too, and
  ``drop_labels`` replaces labels by it at random during training (label dropout).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(B,) timesteps (int or float) -> (B, dim) features [sin(t f_0..f_{h-1}), cos(...)], zero-padded
    when ``dim`` is odd."""
    half = dim // 2
    if half < 1:
        raise ValueError(f"embedding dim must be at least 2, got {dim}")
    exponent = torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1)
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = t.float().reshape(-1, 1) * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


class SinusoidalEmbedding(nn.Module):
    """``sinusoidal_embedding`` as a module; ``scale`` multiplies t first (e.g. 1000 for t in [0, 1])."""

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1.0):
        super().__init__()
        self.dim, self.max_period, self.scale = int(dim), float(max_period), float(scale)

    def forward(self, t: Tensor) -> Tensor:
        return sinusoidal_embedding(t * self.scale if self.scale != 1.0 else t, self.dim, self.max_period)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}, scale={self.scale:g}"


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of dimension ``dim`` -> Linear -> SiLU -> Linear, to ``out_dim``
    (Ho et al.: ``out_dim`` = 4 ``dim``)."""

    def __init__(self, dim: int, out_dim: int | None = None, max_period: float = 10000.0, scale: float = 1.0):
        super().__init__()
        out_dim = out_dim or 4 * dim
        self.sinusoid = SinusoidalEmbedding(dim, max_period, scale)
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.out_dim = out_dim

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.sinusoid(t))


class LearnedTimestepEmbedding(nn.Module):
    """A learned ``dim``-vector per integer step in ``[0, num_steps)`` -> Linear -> SiLU -> Linear, to
    ``out_dim``: the same interface as ``TimestepEmbedding`` for models with a handful of discrete steps."""

    def __init__(self, num_steps: int, dim: int, out_dim: int | None = None):
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"a learned timestep embedding needs at least one step, got {num_steps}")
        out_dim = out_dim or 4 * dim
        self.table = nn.Embedding(num_steps, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.out_dim = out_dim

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.table(t.long()))


TIME_EMBEDDINGS = ("sinusoidal", "learned")


def time_embedding(kind: str, dim: int, out_dim: int | None = None, num_steps: int = 0) -> nn.Module:
    """``"sinusoidal"`` (``TimestepEmbedding``) or ``"learned"`` (``LearnedTimestepEmbedding`` over
    ``num_steps`` discrete steps): (B,) timesteps -> (B, out_dim)."""
    if kind == "sinusoidal":
        return TimestepEmbedding(dim, out_dim)
    if kind == "learned":
        return LearnedTimestepEmbedding(num_steps, dim, out_dim)
    raise ValueError(f"unknown time embedding {kind!r}; valid: {', '.join(TIME_EMBEDDINGS)}")


class ClassEmbedding(nn.Module):
    """A learned ``dim``-vector per class and one for the null class (index ``num_classes``)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"ClassEmbedding needs at least one class, got {num_classes}")
        self.num_classes = int(num_classes)
        self.embedding = nn.Embedding(self.num_classes + 1, dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, labels: Tensor | None, batch_size: int | None = None) -> Tensor:
        """(B,) labels -> (B, dim); None (needs ``batch_size``) or labels < 0 give the null embedding."""
        if labels is None:
            if batch_size is None:
                raise ValueError("labels=None needs batch_size")
            labels = torch.full((batch_size,), self.null_label, device=self.embedding.weight.device)
        labels = labels.long()
        labels = torch.where(labels < 0, torch.full_like(labels, self.null_label), labels)
        return self.embedding(labels)

    def drop_labels(self, labels: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
        """Labels with each replaced by the null label with probability ``p`` (classifier-free training)."""
        if p <= 0:
            return labels
        drop = torch.rand(labels.shape, device=labels.device, generator=generator) < p
        return torch.where(drop, torch.full_like(labels, self.null_label), labels)
