"""difgan: one experiment protocol for GANs, diffusion models and the hybrids between them."""

__version__ = "0.1.0"
