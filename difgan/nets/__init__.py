"""Architectures only (``nn.Module``s): the DDPM UNet, DCGAN, and the embeddings they share."""

from difgan.nets.embeddings import (
    ClassEmbedding,
    SinusoidalEmbedding,
    TimestepEmbedding,
    sinusoidal_embedding,
)
from difgan.nets.unet import UNet

__all__ = ["ClassEmbedding", "SinusoidalEmbedding", "TimestepEmbedding", "UNet", "sinusoidal_embedding"]
