"""Reference statistics of real images, computed once per (dataset, split, resolution, feature space, n)
and cached on disk under a fingerprint; a change of any input recomputes.

The fingerprint covers the dataset's identity (source, name, resolution, channels, class subset, limit,
crop, canonical split seed and fraction), the split and its size, n, the feature network's weights (sha256)
and a content probe of the selected images. The file holds the real features (KID and precision/recall
need them) and their float64 mean and covariance (FID):
``<cache_dir>/reference/<dataset>_<split>_<res>px_<space>_n<n>_<fingerprint>.pt``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from difgan.data.datamodule import ImageDataModule
from difgan.metrics.config import MetricsError
from difgan.metrics.distributed import barrier, broadcast_flag, gather_chunks, my_chunks, world
from difgan.metrics.domain_net import file_lock
from difgan.metrics.features import FeatureSpace, extract
from difgan.metrics.formulas import feature_statistics, psd_sqrt
from difgan.metrics.realdata import (
    canonical_datamodule,
    data_identity,
    fingerprint,
    probe_hash,
    split_images,
    subset_indices,
)

FORMAT_VERSION = 1


@dataclass
class Reference:
    features: Tensor                 # (n, d) float32, CPU
    mu: np.ndarray                   # (d,) float64
    sigma: np.ndarray                # (d, d) float64
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    def sigma_sqrt(self) -> Tensor:
        """sigma^(1/2), computed on first use and kept (FID with more samples than dimensions needs it)."""
        if getattr(self, "_sigma_sqrt", None) is None:
            self._sigma_sqrt = psd_sqrt(self.sigma)
        return self._sigma_sqrt


def reference_key(space: FeatureSpace, dm: ImageDataModule, split: str, n: int | None) -> tuple[dict, Tensor]:
    dm = canonical_datamodule(dm)
    ds = dm.split(split)
    idx = subset_indices(len(ds), n)
    inputs = {"data": data_identity(dm), "split": split, "split_size": len(ds), "n": len(idx),
              "space": space.name, "space_fingerprint": space.fingerprint, "probe": probe_hash(ds, idx),
              "format": FORMAT_VERSION}
    return inputs, idx


def reference_path(cache_dir: Path, dm: ImageDataModule, inputs: dict) -> Path:
    return (Path(cache_dir).expanduser() / "reference" /
            f"{dm.name}_{inputs['split']}_{dm.resolution}px_{inputs['space']}_n{inputs['n']}_"
            f"{fingerprint(inputs)}.pt")


def _extract_real(space, dm, split, idx, batch_size, device) -> Tensor:
    """Features of the real images at ``idx``; under DDP each rank extracts its chunks, all get all."""
    ds = canonical_datamodule(dm).split(split)
    local = []
    for s, e in my_chunks(len(idx), batch_size):
        images, _ = split_images(ds, idx[s:e], batch_size=batch_size, num_workers=dm.num_workers)
        local.append(extract(space, images, batch_size, device)["features"])
    if local:
        local_t = torch.cat(local)
    else:  # this rank had no chunk: an empty tensor of the right width
        local_t = extract(space, split_images(ds, idx[:1])[0], 1, device)["features"][:0]
    return gather_chunks(local_t, len(idx), batch_size)


def _load(path: Path) -> Reference | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return Reference(blob["features"], blob["mu"].numpy(), blob["sigma"].numpy(), blob["info"])
    except Exception:  # noqa: BLE001 - a corrupt or partial cache file is recomputed
        return None


def _save(ref: Reference, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"features": ref.features, "mu": torch.from_numpy(ref.mu),
                "sigma": torch.from_numpy(ref.sigma), "info": ref.info}, tmp)
    os.replace(tmp, path)


def reference_statistics(space: FeatureSpace, dm: ImageDataModule, split: str, n: int | None, cache_dir: Path,
                         batch_size: int = 250, device: torch.device | str | None = None,
                         verbose: bool = True) -> Reference:
    """The cached reference of ``n`` real images of ``split`` in ``space`` (computed on a miss)."""
    dm_c = canonical_datamodule(dm)
    if split == "val" and len(dm_c.split("val")) == 0:
        raise MetricsError(f"{dm.name} has no val split to use as reference; use reference_split=train")
    inputs, idx = reference_key(space, dm_c, split, n)
    if len(idx) < 2:
        raise MetricsError(f"the {split} split of {dm.name} has {len(idx)} images; metrics need at least 2")
    path = reference_path(cache_dir, dm_c, inputs)
    rank, size = world()
    info = {"cache_file": str(path), "fingerprint": fingerprint(inputs), "inputs": inputs}
    if size > 1:  # rank 0 decides hit or miss for everyone, so every rank takes part in the same collectives
        hit = broadcast_flag(path.is_file() and _load(path) is not None if rank == 0 else False)
        if hit:
            barrier()
            return _load(path)
        start = time.perf_counter()
        feats = _extract_real(space, dm_c, split, idx, batch_size, device)
        mu, sigma = feature_statistics(feats)
        ref = Reference(feats, mu, sigma, {**info, "compute_time_s": round(time.perf_counter() - start, 2)})
        if rank == 0:
            _save(ref, path)
        barrier()
        return ref
    with file_lock(path):
        if path.is_file() and (ref := _load(path)) is not None:
            return ref
        if verbose:
            print(f"computing reference statistics: {dm.name} {split} n={len(idx)} in {space.name} space "
                  f"-> {path}", flush=True)
        start = time.perf_counter()
        feats = _extract_real(space, dm_c, split, idx, batch_size, device)
        mu, sigma = feature_statistics(feats)
        ref = Reference(feats, mu, sigma, {**info, "compute_time_s": round(time.perf_counter() - start, 2)})
        _save(ref, path)
        return ref
