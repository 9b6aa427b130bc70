"""Image preparation shared by every source: channels, center crop, antialiased resize, uint8 CHW."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm


def _to_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    array = image.numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3):  # CHW -> HWC
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array.astype(np.uint8))


def to_uint8_chw(image, resolution: int, channels: int, center_crop: int | None = None) -> Tensor:
    """One image (PIL, HWC/CHW array or tensor) -> uint8 tensor (channels, resolution, resolution).

    Grayscale is replicated to RGB when 3 channels are asked for; RGB is converted to luminance for 1.
    Resizing uses PIL's bicubic filter, which antialiases when downsampling (STL10 96 -> 64, CelebA).
    """
    pil = _to_pil(image)
    pil = pil.convert("L" if channels == 1 else "RGB")
    if center_crop is not None:
        w, h = pil.size
        left, top = (w - center_crop) // 2, (h - center_crop) // 2
        pil = pil.crop((left, top, left + center_crop, top + center_crop))
    if pil.size != (resolution, resolution):
        pil = pil.resize((resolution, resolution), Image.BICUBIC)
    array = np.asarray(pil, dtype=np.uint8)
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


def resize_uint8_batch(images: Tensor, resolution: int, channels: int) -> Tensor:
    """A uint8 batch (N, C, H, W) -> (N, channels, resolution, resolution), antialiased bicubic."""
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


def prepare_images(data, indices: Tensor, resolution: int, channels: int, center_crop: int | None,
                   desc: str = "loading") -> Tensor:
    """Prepare the images at ``indices`` of a source into one uint8 tensor (N, C, H, W).

    Sources that expose all images as one uint8 array (``data.array``) take a fast batched path.
    """
    if data.array is not None and center_crop is None:
        return resize_uint8_batch(data.array[indices], resolution, channels)
    out = torch.empty((len(indices), channels, resolution, resolution), dtype=torch.uint8)
    for k, i in enumerate(tqdm(indices.tolist(), desc=desc, disable=len(indices) < 20000, leave=False)):
        out[k] = to_uint8_chw(data.dataset[i][0], resolution, channels, center_crop)
    return out
