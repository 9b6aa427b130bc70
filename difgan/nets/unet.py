"""The DDPM UNet (Ho et al. 2020, appendix B), written from the paper's description.

Layout, for ``channel_mult`` of length L and ``num_res_blocks`` N:
- a 3x3 input convolution to ``channels``;
- down path: at level i, N residual blocks of width ``channels * channel_mult[i]`` (each followed by
  self-attention if the level's resolution is in ``attention_resolutions``), then a stride-2 3x3
  convolution, except after the last level;
- middle: residual block, self-attention (``mid_attention``), residual block;
- up path: at level i (reversed), N + 1 residual blocks, each taking the concatenation with the matching
  skip activation (attention as on the way down), then nearest 2x up-sampling and a 3x3 convolution;
- GroupNorm, SiLU, 3x3 output convolution (zero-initialised) to the image's channels: the predicted noise.

Residual block: GroupNorm -> SiLU -> conv3x3 -> + Linear(SiLU(embedding)) -> GroupNorm -> SiLU -> dropout
-> conv3x3 (zero-initialised), plus a 1x1 shortcut when the width changes. The embedding is the sinusoidal
timestep embedding through a 2-layer MLP (``channels`` -> 4 ``channels``), plus an optional class embedding
with a null class for classifier-free guidance. Options for the hybrids: ``time_embedding_kind="learned"``
(a lookup table over ``num_timesteps`` discrete steps instead of sinusoids) and ``cond_dim`` (a vector, e.g.
DDGAN's latent z, through a 2-layer mapping network added to the embedding, so it reaches every block).
Attention is single- or multi-head softmax attention over all positions
(``F.scaled_dot_product_attention``), with a zero-initialised output projection.

Ho et al.'s CIFAR-10 network is ``UNet(3, 32, channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
attention_resolutions=(16,), dropout=0.1)``: 35.7M parameters. Resolutions must be divisible by
2^(L-1) (28 px works with L <= 3, 32 and 64 px with L <= 6, 96 px with L <= 6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difgan.nets.embeddings import ClassEmbedding, time_embedding


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= ``max_groups`` that divides ``channels`` (32 for every width >= 32 that
    is a multiple of 32, as in the paper; fewer for tiny test networks)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def _norm(channels: int, max_groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels, max_groups), channels, eps=1e-6)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, max_groups: int = 32):
        super().__init__()
        self.norm1 = _norm(in_ch, max_groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = _norm(out_ch, max_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``emb`` is the already SiLU-activated (B, emb_dim) conditioning vector."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions with a residual connection.

    The projections are linear layers applied per position (the same maps as 1x1 convolutions); on CPU a
    1x1 convolution falls back to a slow non-oneDNN kernel, a matmul does not."""

    def __init__(self, channels: int, num_heads: int = 1, max_groups: int = 32):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention_heads={num_heads} does not divide {channels} channels")
        self.num_heads = num_heads
        self.norm = _norm(channels, max_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        qkv = self.qkv(h).reshape(B, H * W, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, HW, C / heads)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, H * W, C)
        return x + self.proj(h).transpose(1, 2).reshape(B, C, H, W)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the down or up path: residual blocks, each with optional attention, then an
    optional resampler."""

    def __init__(self, blocks: list[ResBlock], attentions: list[nn.Module], resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(attentions)
        self.resample = resample


def level_resolutions(resolution: int, levels: int) -> list[int]:
    """The feature-map size at each level, or ValueError if ``resolution`` cannot be halved that often."""
    sizes = [resolution // 2**i for i in range(levels)]
    if resolution % 2 ** (levels - 1):
        raise ValueError(
            f"{resolution} px cannot be halved {levels - 1} times (channel_mult has {levels} "
            f"levels); use a resolution divisible by {2 ** (levels - 1)} or fewer levels"
        )
    return sizes


def resolve_attention(attention_resolutions: str | int | Sequence[int] | None, sizes: list[int]) -> set[int]:
    """``"all"`` (every level), ``"none"``/None/[] (none; the middle block keeps its own), or a list of
    feature-map sizes in px, each of which must occur."""
    if attention_resolutions is None:
        return set()
    if isinstance(attention_resolutions, str):
        if attention_resolutions == "all":
            return set(sizes)
        if attention_resolutions == "none":
            return set()
        raise ValueError(
            f"attention_resolutions must be 'all', 'none' or a list of px, got {attention_resolutions!r}"
        )
    if isinstance(attention_resolutions, int):
        attention_resolutions = [attention_resolutions]
    wanted = {int(r) for r in attention_resolutions}
    missing = sorted(wanted - set(sizes), reverse=True)
    if missing:
        raise ValueError(f"attention at {missing} px never occurs: this network's levels are {sizes} px")
    return wanted


class UNet(nn.Module):
    """Predicts the noise in x_t: ``forward(x (B, C, H, W), t (B,), labels (B,) or None) -> (B, C, H, W)``."""

    def __init__(
        self,
        in_channels: int,
        resolution: int,
        channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: str | Sequence[int] | None = (16,),
        dropout: float = 0.1,
        num_classes: int = 0,
        attention_heads: int = 1,
        mid_attention: bool = True,
        norm_max_groups: int = 32,
        out_channels: int | None = None,
        time_embedding_kind: str = "sinusoidal",
        num_timesteps: int = 0,
        cond_dim: int = 0,
    ):
        super().__init__()
        if channels < 1 or num_res_blocks < 1 or not channel_mult or min(channel_mult) < 1:
            raise ValueError("channels, num_res_blocks and channel_mult entries must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.in_channels, self.resolution = int(in_channels), int(resolution)
        self.num_classes = int(num_classes)
        sizes = level_resolutions(self.resolution, len(channel_mult))
        attn_at = resolve_attention(attention_resolutions, sizes)
        self.attention_at = sorted(attn_at, reverse=True)
        emb_dim = 4 * channels
        g = norm_max_groups

        def attention(ch: int, size: int) -> nn.Module:
            return AttentionBlock(ch, attention_heads, g) if size in attn_at else nn.Identity()

        self.time_embed = time_embedding(time_embedding_kind, channels, emb_dim, num_timesteps)
        # an extra conditioning vector (DDGAN's latent z) through a small mapping network into the embedding
        self.cond_embed = (nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                           if cond_dim > 0 else None)
        self.class_embed = ClassEmbedding(num_classes, emb_dim) if num_classes > 0 else None
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        skip_widths = [channels]
        ch = channels
        self.down = nn.ModuleList()
        for i, (mult, size) in enumerate(zip(channel_mult, sizes)):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, channels * mult, emb_dim, dropout, g))
                ch = channels * mult
                attns.append(attention(ch, size))
                skip_widths.append(ch)
            last = i == len(channel_mult) - 1
            self.down.append(Level(blocks, attns, None if last else Downsample(ch)))
            if not last:
                skip_widths.append(ch)

        self.mid_block1 = ResBlock(ch, ch, emb_dim, dropout, g)
        self.mid_attention = AttentionBlock(ch, attention_heads, g) if mid_attention else nn.Identity()
        self.mid_block2 = ResBlock(ch, ch, emb_dim, dropout, g)

        self.up = nn.ModuleList()
        for i in reversed(range(len(channel_mult))):
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(
                    ResBlock(ch + skip_widths.pop(), channels * channel_mult[i], emb_dim, dropout, g)
                )
                ch = channels * channel_mult[i]
                attns.append(attention(ch, sizes[i]))
            self.up.append(Level(blocks, attns, Upsample(ch) if i > 0 else None))

        self.norm_out = _norm(ch, g)
        self.conv_out = _zero(nn.Conv2d(ch, out_channels or in_channels, 3, padding=1))
        self._init_weights()

    def _init_weights(self) -> None:
        """Ho et al.'s variance_scaling(1, fan_avg, uniform) (= Xavier uniform) for every convolution and
        linear layer that is not zero-initialised; zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear) and m.weight.abs().sum() > 0:
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def null_label(self) -> int | None:
        return self.class_embed.null_label if self.class_embed is not None else None

    def embedding(self, t: Tensor, labels: Tensor | None, cond: Tensor | None = None) -> Tensor:
        emb = self.time_embed(t)
        if self.class_embed is not None:
            emb = emb + self.class_embed(labels, batch_size=t.shape[0])
        if self.cond_embed is not None:
            if cond is None:
                raise ValueError("this UNet was built with cond_dim > 0: pass cond")
            emb = emb + self.cond_embed(cond)
        return F.silu(emb)

    def _encode(self, x: Tensor, t: Tensor, labels: Tensor | None,
                cond: Tensor | None = None) -> tuple[Tensor, list[Tensor], Tensor]:
        """The down path and the middle: (features at the lowest resolution, skips, embedding)."""
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.embedding(t, labels, cond)
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for block, attn in zip(level.blocks, level.attentions):
                h = attn(block(h, emb))
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        h = self.mid_block2(self.mid_attention(self.mid_block1(h, emb)), emb)
        return h, skips, emb

    def encode(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """Features of (x_t, t, labels) after the middle block (B, C_mid, H / 2^(L-1), W / 2^(L-1)): the
        encoder a time-conditioned discriminator can reuse (``UNetEncoderDiscriminator``)."""
        return self._encode(x, t, labels)[0]

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None,
                cond: Tensor | None = None) -> Tensor:
        h, skips, emb = self._encode(x, t, labels, cond)
        for level in self.up:
            for block, attn in zip(level.blocks, level.attentions):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if level.resample is not None:
                h = level.resample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
