"""Real images for metrics: a canonical copy of the run's dataset, fixed subsets, and identities.

Reference statistics and the domain network describe the *dataset*, not one run: they are built from the
dataset with data seed 0 and a 10% held-out split (``CANONICAL``), whatever seed and val_fraction the run
used, so runs with different seeds are scored against the same real images and the same feature network.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from difgan.data.datamodule import ImageDataModule

CANONICAL = {"seed": 0, "val_fraction": 0.1}


def canonical_datamodule(dm: ImageDataModule) -> ImageDataModule:
    """``dm`` itself when it already uses the canonical split, else a sibling over the same data that does."""
    if dm.seed == CANONICAL["seed"] and abs(dm.val_fraction - CANONICAL["val_fraction"]) < 1e-12:
        return dm
    return ImageDataModule(
        source=dm.source, root=str(dm.root), resolution=dm.resolution, channels=dm.channels,
        batch_size=dm.batch_size, num_workers=dm.num_workers, val_fraction=CANONICAL["val_fraction"],
        in_memory=dm.in_memory, download=False, classes=dm.class_subset, center_crop=dm.center_crop,
        limit=dm.limit, seed=CANONICAL["seed"], name=dm.name, **dm.source_options)


def data_identity(dm: ImageDataModule) -> dict:
    """What makes two datamodules hold the same images (the root folder does not)."""
    return {"source": dm.source, "name": dm.name, "resolution": dm.resolution, "channels": dm.channels,
            "classes": dm.class_subset, "limit": dm.limit, "center_crop": dm.center_crop,
            "source_options": {k: str(v) for k, v in sorted(dm.source_options.items())}, **CANONICAL}


def subset_indices(length: int, n: int | None) -> Tensor:
    """A fixed subset of ``n`` indices of a split (all of it when n is None or >= its length)."""
    if n is None or n >= length:
        return torch.arange(length)
    g = torch.Generator().manual_seed(0)
    return torch.randperm(length, generator=g)[:n].sort().values


def split_images(ds: Dataset, indices: Tensor, batch_size: int = 500, num_workers: int = 0,
                 desc: str = "reading images") -> tuple[Tensor, Tensor]:
    """uint8 images (n, C, H, W) and labels of ``ds`` at ``indices``."""
    if hasattr(ds, "images") and hasattr(ds, "labels"):  # InMemoryImages: one indexing operation
        return ds.images[indices], ds.labels[indices]
    images, labels = [], []
    loader = DataLoader(Subset(ds, indices.tolist()), batch_size=batch_size, num_workers=num_workers)
    for x, y in tqdm(loader, desc=desc, leave=False, disable=len(indices) < 5000):
        images.append(torch.as_tensor(x))
        labels.append(torch.as_tensor(y))
    return torch.cat(images), torch.cat(labels)


def probe_hash(ds: Dataset, indices: Tensor, probes: int = 16) -> str:
    """A cheap content fingerprint: the bytes of ``probes`` images spread over the subset, and its size."""
    h = hashlib.sha256(f"{len(ds)}:{len(indices)}".encode())
    if len(indices):
        pick = indices[torch.linspace(0, len(indices) - 1, min(probes, len(indices))).round().long()]
        images, labels = split_images(ds, pick)
        h.update(images.contiguous().numpy().tobytes())
        h.update(labels.numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
