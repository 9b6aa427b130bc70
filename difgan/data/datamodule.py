"""ImageDataModule: one LightningDataModule for every dataset the suite knows.

Datasets come from ``difgan.data.sources`` (one small function per source, built on torchvision's own
classes). This module turns them into batches the same way for every model: images are resized (with
antialiasing) and converted to the configured channels once, kept as uint8, and become floats in [-1, 1]
only after the batch reaches the device (``on_after_batch_transfer``), so the loader moves 4x fewer bytes.
Small datasets are held in memory and served a whole batch per index lookup.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from difgan.data.images import prepare_images, to_uint8_chw
from difgan.data.sources import SOURCES, SourceData
from difgan.errors import ConfigError
from difgan.validation import check_int


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) and labels in memory; a list of indices fetches a whole batch at once."""

    def __init__(self, images: Tensor, labels: Tensor):
        assert images.dtype == torch.uint8 and images.ndim == 4
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices)
        return self.images[idx], self.labels[idx]


def _batch_passthrough(batch):
    return batch


class PreparedImages(Dataset):
    """A source dataset read lazily, each image prepared on the fly (for data too large for memory).
    Unlabeled sources (``labeled=False``) give label -1 whatever the source returns (None, -1, ...)."""

    def __init__(self, source: Dataset, indices: Tensor, resolution: int, channels: int,
                 center_crop: int | str | None, labeled: bool = True):
        self.source, self.indices, self.labeled = source, indices, labeled
        self.resolution, self.channels, self.center_crop = resolution, channels, center_crop

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label = self.source[int(self.indices[i])]
        image = to_uint8_chw(image, self.resolution, self.channels, self.center_crop)
        return image, int(label) if self.labeled else -1


class EpochSeededSampler(Sampler[int]):
    """A random permutation drawn from ``seed + epoch``: the data order does not depend on the global RNG,
    so a resumed run sees the same batches as one that never stopped.

    ``epoch_source`` (the trainer's ``current_epoch`` in a fit) wins over ``set_epoch``: Lightning calls
    ``set_epoch`` with its count of processed epochs, which runs one ahead of ``current_epoch`` after a run
    stopped by ``max_steps`` mid-epoch is resumed. ``resume(epoch, skip)`` makes the next pass over ``epoch``
    start at position ``skip`` of its permutation (mid-epoch resume, see ``ResumableLoader``)."""

    def __init__(self, n: int, seed: int, epoch_source: Callable[[], int | None] | None = None):
        self.n, self.seed, self.epoch, self.epoch_source = n, seed, 0, epoch_source
        self._skip_epoch, self._skip = None, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, skip: int) -> None:
        self._skip_epoch, self._skip = int(epoch), int(skip)

    def current_epoch(self) -> int:
        epoch = self.epoch_source() if self.epoch_source is not None else None
        return self.epoch if epoch is None else int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        epoch = self.current_epoch()
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        if self._skip_epoch == epoch:
            order = order[self._skip:]
        self._skip_epoch, self._skip = None, 0  # once: later passes are whole epochs
        return iter(order)


class ResumableLoader(DataLoader):
    """A DataLoader whose place in the epoch is part of the checkpoint, through Lightning's stateful
    dataloader hooks (``state_dict`` / ``load_state_dict``, stored with the fit loop's state): a run killed
    mid-epoch continues the same data order at the next batch instead of restarting the epoch's permutation.

    ``position()`` is the number of batches of the current epoch the training loop has taken (not what the
    loader prefetched). The iterator's base seed comes from the loader's own ``generator``, never from the
    global RNG, so creating an iterator does not shift the noise a resumed run draws. Under DDP Lightning
    wraps the sampler (DistributedSamplerWrapper); there the state is empty and a mid-epoch resume restarts
    the epoch's order.
    """

    def __init__(self, *args, position: Callable[[], int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._position = position

    def _seeded(self) -> EpochSeededSampler | None:
        return self.sampler if isinstance(self.sampler, EpochSeededSampler) else None

    def state_dict(self) -> dict:
        sampler = self._seeded()
        if sampler is None or self._position is None:
            return {}
        return {"epoch": sampler.current_epoch(), "batches": int(self._position()),
                "batch_size": int(self.batch_size), "n": sampler.n}

    def load_state_dict(self, state: dict) -> None:
        sampler = self._seeded()
        if not state or sampler is None or state.get("n") != sampler.n:
            return
        if int(state["batches"]) < len(self):  # saved at the end of its epoch: the next one starts whole
            sampler.resume(int(state["epoch"]), int(state["batches"]) * int(state["batch_size"]))


class ImageDataModule(L.LightningDataModule):
    """Batches of ``(images, labels)``; images uint8 from the loader, floats in [-1, 1] on the device.

    Labels are class indices, or -1 for unlabeled data (``num_classes == 0``).
    """

    def __init__(self, source: str, root: str, resolution: int, channels: int, batch_size: int,
                 num_workers: int = 0, val_fraction: float = 0.0, in_memory: bool = True,
                 download: bool = False, classes: list[str] | None = None,
                 center_crop: int | str | None = None, limit: int | None = None, seed: int = 0,
                 name: str | None = None, **source_options):
        super().__init__()
        if source not in SOURCES:
            raise ConfigError("data.source", f"unknown source {source!r}; valid: "
                              f"{', '.join(sorted(SOURCES))}")
        allowed = set(inspect.signature(SOURCES[source]).parameters) - {"root", "split", "download"}
        for key in source_options:
            if key not in allowed:
                raise ConfigError(f"data.{key}", f"not an option of source {source!r}; its options: "
                                  f"{', '.join(sorted(allowed)) or 'none'}")
        check_int("data.resolution", resolution, minimum=1)
        check_int("data.batch_size", batch_size, minimum=1)
        check_int("data.num_workers", num_workers, minimum=0)
        if limit is not None:
            check_int("data.limit", limit, minimum=1)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ConfigError("data.channels", f"must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) \
                or not 0 <= val_fraction < 1:
            raise ConfigError("data.val_fraction", f"must be a number in [0, 1), got {val_fraction!r}")
        if center_crop is not None and center_crop != "square":
            check_int("data.center_crop", center_crop, minimum=1, alternatives="'square' or null")
        if classes is not None and (isinstance(classes, str) or not hasattr(classes, "__iter__")):
            raise ConfigError("data.classes", f"must be a list of class names, e.g. [cat, frog], "
                              f"got {classes!r}")
        self.source, self.root = source, Path(root).expanduser()
        self.name = name or source
        self.resolution, self.channels = int(resolution), int(channels)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.val_fraction, self.in_memory = float(val_fraction), bool(in_memory)
        self.download = bool(download)
        # Names compared as strings: Hydra reads data.classes=[3,5] as ints, MNIST's names are "3", "5".
        self.class_subset = [str(c) for c in classes] if classes else None
        self.center_crop, self.limit, self.seed = center_crop, limit, int(seed)
        self.source_options = dict(source_options)
        self._splits: dict[str, Dataset] = {}
        self._class_names: list[str] | None = None
        self._loaded: SourceData | None = None  # the train source read by prepare_data, reused by setup

    # ----------------------------------------------------------------- what models need before setup
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.resolution, self.resolution)

    # ----------------------------------------------------------------- loading
    def _load(self, split: str) -> SourceData:
        return SOURCES[self.source](self.root, split=split, download=self.download, **self.source_options)

    def prepare_data(self) -> None:
        if self.download:  # download once, on one process; setup() then reads from disk
            self._loaded = self._load("train")

    def setup(self, stage: str | None = None) -> None:
        if "train" in self._splits:
            return
        data, self._loaded = self._loaded or self._load("train"), None
        labels, keep, wanted = self._select(data)
        if self.limit is not None:
            keep = keep[: int(self.limit)]
        g = torch.Generator().manual_seed(self.seed)
        keep = keep[torch.randperm(len(keep), generator=g)]
        n_val = int(round(self.val_fraction * len(keep)))
        index_sets = {"train": keep[n_val:], "val": keep[:n_val]}
        for split, idx in index_sets.items():
            self._splits[split] = self._materialize(data, idx, labels, wanted)

    def _select(self, data: SourceData) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """(labels, indices kept by ``data.classes``, wanted class indices or None); sets the class names."""
        labels = torch.as_tensor(data.targets, dtype=torch.long) if data.targets is not None else None
        keep = torch.arange(len(data.dataset))
        if not self.class_subset:
            self._class_names = list(data.classes)
            return labels, keep, None
        if labels is None or not data.classes:
            raise ConfigError("data.classes", f"{self.name} is unlabeled: there are no classes to select; "
                              "set data.classes=null")
        unknown = [c for c in self.class_subset if c not in data.classes]
        if unknown:
            raise ConfigError("data.classes", f"unknown class {unknown[0]!r} for {self.name}; "
                              f"valid: {', '.join(data.classes)}")
        wanted = torch.tensor([data.classes.index(c) for c in self.class_subset])
        self._class_names = list(self.class_subset)
        return labels, keep[torch.isin(labels, wanted)], wanted

    def _materialize(self, data: SourceData, idx: Tensor, labels: Tensor | None, wanted: Tensor | None):
        remap = None
        if wanted is not None:  # class subsets are relabelled 0..k-1 in the order given
            size = max(int(labels.max()) if labels.numel() else 0, int(wanted.max())) + 1
            remap = torch.full((size,), -1, dtype=torch.long)
            remap[wanted] = torch.arange(len(wanted))
        if not self.in_memory:
            ds = PreparedImages(data.dataset, idx, self.resolution, self.channels, self.center_crop,
                                labeled=labels is not None)
            return ds if remap is None else _Relabelled(ds, remap)
        images = prepare_images(data, idx, self.resolution, self.channels, self.center_crop,
                                desc=f"loading {self.name}")
        y = labels[idx] if labels is not None else torch.full((len(idx),), -1, dtype=torch.long)
        if remap is not None:
            y = remap[y]
        return InMemoryImages(images, y)

    @property
    def num_classes(self) -> int:
        if self._class_names is None:
            self.setup()
        return len(self._class_names)

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self.setup()
        return list(self._class_names)

    def split(self, name: str) -> Dataset:
        """The prepared ``train`` or ``val`` split, or the source's held-out ``test`` split (read on first
        use; same classes, relabelling, resolution and channels). Items: (uint8 image, label)."""
        self.setup()
        if name == "test" and "test" not in self._splits:
            data = self._load("test")
            labels, keep, wanted = self._select(data)
            self._splits["test"] = self._materialize(data, keep, labels, wanted)
        if name not in self._splits:
            raise ConfigError("split", f"unknown split {name!r}; valid: train, val, test")
        return self._splits[name]

    # ----------------------------------------------------------------- loaders
    def _loader(self, ds: Dataset, shuffle: bool, drop_last: bool) -> DataLoader:
        sampler = EpochSeededSampler(len(ds), self.seed, self._trainer_epoch) if shuffle else None
        batched = isinstance(ds, InMemoryImages)
        return ResumableLoader(
            ds, batch_size=self.batch_size, sampler=sampler, drop_last=drop_last,
            num_workers=0 if batched else self.num_workers,
            collate_fn=_batch_passthrough if batched else None,
            persistent_workers=self.num_workers > 0 and not batched,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed), position=self._batches_taken,
        )

    def _trainer_epoch(self) -> int | None:
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else int(trainer.current_epoch)

    def _batches_taken(self) -> int:
        """Batches of the current epoch the training loop has taken (0 outside a Lightning fit)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)

    def train_dataloader(self) -> DataLoader:
        ds = self.split("train")
        if len(ds) < self.batch_size:
            raise ConfigError("data.batch_size", f"{self.batch_size} exceeds the {len(ds)} training images")
        return self._loader(ds, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split("val"), shuffle=False, drop_last=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        return to_signed_float(images), labels


def to_signed_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounding (not truncating, unlike torchmetrics' normalize=True)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class _Relabelled(Dataset):
    def __init__(self, ds: Dataset, remap: Tensor):
        self.ds, self.remap = ds, remap

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        image, label = self.ds[i]
        return image, int(self.remap[label])
