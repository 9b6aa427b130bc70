"""Writing sampled images for other tools: ``write_samples(images, out, format)``.

- ``png``: one grid image (the suite's sample grids);
- ``npz``: uint8 NHWC array under key ``arr_0``, what the ADM (guided-diffusion) and EDM evaluators read;
- ``folder``: one PNG per image (``000000.png``, ...), what torch-fidelity and clean-fid read from a folder.

Images come in [-1, 1] (N, C, H, W); they are rounded, not truncated, to uint8 (PITFALLS: normalize=True).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

FORMATS = ("png", "npz", "folder")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] (N, C, H, W) -> uint8 (N, H, W, C), rounding to the nearest level."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def default_name(format: str, stem: str) -> str:  # noqa: A002 - the config's name
    return {"png": f"{stem}.png", "npz": f"{stem}.npz", "folder": stem}[format]


def write_samples(images: torch.Tensor, out: str | Path, format: str = "png") -> Path:  # noqa: A002
    """Write ``images`` to ``out`` (a file for png/npz, a folder for folder) and return the path."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; valid: {', '.join(FORMATS)}")
    out = Path(out)
    if format == "png":
        from difgan.callbacks.samples import save_grid

        return save_grid(images, out)
    arr = to_uint8(images)
    if format == "npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, arr_0=arr)
        return out if out.suffix == ".npz" else out.with_name(out.name + ".npz")
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(arr):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(out / f"{i:06d}.png")
    return out
