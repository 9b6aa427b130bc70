"""Image preparation shared by every source: channels, center crop, antialiased resize, uint8 CHW."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from difgan.errors import ConfigError

# Images resized per chunk on the fast path: bounds the float copy (STL10's 105,000 x 3 x 96 x 96 would
# otherwise need 12 GB at once).
RESIZE_CHUNK = 4096


_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _to_chw(image) -> Tensor:
    """PIL image, HWC/CHW array or tensor -> uint8 tensor (C, H, W) with C = 1 or 3."""
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            image = image.convert("L" if image.mode in _GRAY_MODES else "RGB")
        array = np.asarray(image, dtype=np.uint8)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(array.copy())
    x = torch.as_tensor(np.asarray(image, dtype=np.uint8) if not isinstance(image, Tensor) else image)
    if x.ndim == 2:
        x = x[None]
    elif x.shape[0] not in (1, 3) and x.shape[-1] in (1, 3):  # HWC -> CHW
        x = x.permute(2, 0, 1)
    return x.to(torch.uint8)


def to_uint8_chw(image, resolution: int, channels: int, center_crop: int | str | None = None) -> Tensor:
    """One image (PIL, HWC/CHW array or tensor) -> uint8 tensor (channels, resolution, resolution).

    ``center_crop``: side of a centered square cut first (CelebA: 140 of 178x218), ``"square"`` for the
    largest one, None for none (a non-square image is then squashed). Channels and resizing then go through
    ``resize_uint8_batch``, so a lazily prepared image equals the in-memory one pixel for pixel.
    """
    x = _to_chw(image)
    if center_crop is not None:
        h, w = x.shape[-2:]
        side = min(w, h) if center_crop == "square" else int(center_crop)
        if side > min(w, h):
            raise ConfigError("data.center_crop", f"{side} px does not fit in a {w}x{h} image")
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, top:top + side, left:left + side]
    return resize_uint8_batch(x[None], resolution, channels)[0]


def resize_uint8_batch(images: Tensor, resolution: int, channels: int) -> Tensor:
    """A uint8 batch (N, C, H, W) -> (N, channels, resolution, resolution).

    Grayscale is replicated to RGB when 3 channels are asked for; RGB becomes luminance (ITU-R 601) for 1.
    Resizing is bicubic with antialiasing, so downsampling (STL10 96 -> 64, CelebA 140 -> 64) does not alias.
    """
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if images.shape[-1] != resolution or images.shape[-2] != resolution:
        x = F.interpolate(images.float(), size=(resolution, resolution), mode="bicubic", antialias=True,
                          align_corners=False)
        images = x.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous()


def prepare_images(data, indices: Tensor, resolution: int, channels: int, center_crop: int | str | None,
                   desc: str = "loading") -> Tensor:
    """Prepare the images at ``indices`` of a source into one uint8 tensor (N, C, H, W).

    Sources that expose all images as one uint8 array (``data.array``) take a fast batched path.
    """
    out = torch.empty((len(indices), channels, resolution, resolution), dtype=torch.uint8)
    if data.array is not None and center_crop is None:
        for start in range(0, len(indices), RESIZE_CHUNK):
            chunk = indices[start:start + RESIZE_CHUNK]
            out[start:start + len(chunk)] = resize_uint8_batch(data.array[chunk], resolution, channels)
        return out
    for k, i in enumerate(tqdm(indices.tolist(), desc=desc, disable=len(indices) < 20000, leave=False)):
        out[k] = to_uint8_chw(data.dataset[i][0], resolution, channels, center_crop)
    return out
