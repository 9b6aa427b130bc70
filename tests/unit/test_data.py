"""Datasets through the real stack: Hydra data config -> ImageDataModule -> torchvision class -> files that
tests/fixtures/datasets.py wrote in torchvision's on-disk formats."""

from __future__ import annotations

import importlib.util
import urllib.request

import numpy as np
import pytest
import torch

from difgan.build import build_datamodule
from difgan.data.datamodule import to_signed_float, to_uint8
from difgan.errors import ConfigError, DatasetNotFoundError
from tests.fixtures.datasets import CELEBA_CROP, IMAGE_FOLDER_CLASSES

ON_DISK = ["mnist", "fashion_mnist", "cifar10", "stl10", "celeba", "image_folder"]


@pytest.fixture
def datamodule(compose_run):
    """datamodule(name, written, *overrides): the ImageDataModule of ``data=<name>`` on a fixture's files."""

    def _build(name, written, *overrides):
        cfg = compose_run([f"data={name}", f"paths.data_dir={written.data_dir}", *written.overrides,
                           *overrides])
        return build_datamodule(cfg.data, seed=0)

    return _build


def all_items(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a prepared split, in memory or lazy."""
    if hasattr(ds, "images"):
        return ds.images, ds.labels
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def train_and_val(dm) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(all_items(dm.split(s)) for s in ("train", "val") if len(dm.split(s))))
    return torch.cat(xs), torch.cat(ys)


def match_rows(prepared: torch.Tensor, written: np.ndarray) -> list[int]:
    """For each prepared image the index of the identical written image (fails if one has none)."""
    index = {written[i].tobytes(): i for i in range(len(written))}
    return [index[x.numpy().tobytes()] for x in prepared]


# --------------------------------------------------------------------------- pixels and labels round-trip
def test_mnist_round_trips_every_image_with_its_label_and_splits_disjointly(datamodule, mnist_root):
    dm = datamodule("mnist", mnist_root)
    assert dm.image_shape == (1, 28, 28) and dm.num_classes == 10 and dm.class_names[3] == "3"
    train_x, train_y = all_items(dm.split("train"))
    val_x, val_y = all_items(dm.split("val"))
    assert (len(train_x), len(val_x)) == (36, 4)  # val_fraction 0.1 of 40
    train_idx, val_idx = match_rows(train_x, mnist_root.images), match_rows(val_x, mnist_root.images)
    assert sorted(train_idx + val_idx) == list(range(40))  # disjoint, and together every image
    assert train_y.tolist() == mnist_root.labels[train_idx].tolist()
    assert val_y.tolist() == mnist_root.labels[val_idx].tolist()
    test_x, test_y = all_items(dm.split("test"))
    assert test_y.tolist() == mnist_root.test_labels[match_rows(test_x, mnist_root.test_images)].tolist()


def test_cifar10_loader_gives_uint8_and_device_hook_gives_signed_floats(datamodule, cifar10_root):
    dm = datamodule("cifar10", cifar10_root, "data.val_fraction=0")
    assert dm.class_names == cifar10_root.classes
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.long
    idx = match_rows(images, cifar10_root.images)  # exact pixels, channels in RGB order
    assert labels.tolist() == cifar10_root.labels[idx].tolist()
    floats, same_labels = dm.on_after_batch_transfer((images, labels), 0)
    assert floats.dtype == torch.float32 and floats.min() >= -1 and floats.max() <= 1
    assert floats.min() < -0.9 and floats.max() > 0.9
    assert torch.equal(to_uint8(floats), images) and torch.equal(same_labels, labels)
    assert torch.equal(to_signed_float(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))


def test_cifar10_class_subset_keeps_only_those_classes_and_relabels_in_given_order(datamodule, cifar10_root):
    dm = datamodule("cifar10", cifar10_root, "data.classes=[frog,cat]", "data.val_fraction=0")
    assert dm.class_names == ["frog", "cat"] and dm.num_classes == 2
    x, y = all_items(dm.split("train"))
    original = cifar10_root.labels[match_rows(x, cifar10_root.images)]
    assert len(x) == int(np.isin(cifar10_root.labels, [3, 6]).sum()) == 8
    assert sorted(set(original.tolist())) == [3, 6]
    assert y.tolist() == [0 if o == 6 else 1 for o in original]  # frog -> 0, cat -> 1
    test_x, test_y = all_items(dm.split("test"))
    assert set(cifar10_root.test_labels[match_rows(test_x, cifar10_root.test_images)].tolist()) <= {3, 6}


def test_unknown_class_names_the_key_and_the_valid_choices(datamodule, cifar10_root):
    with pytest.raises(ConfigError, match=r"data\.classes: unknown class 'caat'.*valid: airplane, automob"):
        datamodule("cifar10", cifar10_root, "data.classes=[caat]").setup()


def test_mnist_classes_given_as_numbers_select_digits(datamodule, mnist_root):
    dm = datamodule("mnist", mnist_root, "data.classes=[3,5]", "data.val_fraction=0")  # Hydra: ints
    x, y = all_items(dm.split("train"))
    assert sorted(mnist_root.labels[match_rows(x, mnist_root.images)].tolist()) == [3] * 4 + [5] * 4
    assert dm.class_names == ["3", "5"] and sorted(y.tolist()) == [0] * 4 + [1] * 4


def test_fashion_mnist_gray_to_rgb_replicates_channels(datamodule, fashion_mnist_root):
    dm = datamodule("fashion_mnist", fashion_mnist_root)
    assert dm.image_shape == (1, 32, 32) and dm.class_names[0] == "T-shirt/top"  # seed 001's 32 px
    assert next(iter(dm.train_dataloader()))[0].shape == (8, 1, 32, 32)
    dm = datamodule("fashion_mnist", fashion_mnist_root, "data.channels=3", "data.resolution=28")
    x, _ = train_and_val(dm)
    assert x.shape == (40, 3, 28, 28)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert sorted(match_rows(x[:, :1], fashion_mnist_root.images)) == list(range(40))


def test_stl10_is_unlabeled_and_resized_96_to_64_with_antialiasing(datamodule, stl10_root):
    dm = datamodule("stl10", stl10_root, "data.val_fraction=0", "data.batch_size=40")
    assert dm.image_shape == (3, 64, 64) and dm.num_classes == 0 and dm.class_names == []
    images, labels = next(iter(dm.train_dataloader()))  # in_memory=false: prepared lazily per item
    assert images.shape == (40, 3, 64, 64) and images.dtype == torch.uint8
    assert (labels == -1).all()
    # Left half: each image's own colour (identifies it; all 40 of train+unlabeled are there).
    left = images[:, :, 4:28, 2:28].float()
    assert (left.amax((2, 3)) - left.amin((2, 3))).max() <= 1
    found = {tuple(c) for c in left[:, :, 0, 0].round().to(torch.uint8).tolist()}
    assert found == {tuple(c) for c in stl10_root.colors.tolist()}
    # Right half: the 1-px checkerboard becomes flat mid-gray only if the downsampling antialiases.
    right = images[:, :, 4:60, 36:60].float()
    assert (right - 127.5).abs().max() <= 3
    # The in-memory path prepares exactly the same pixels.
    eager = datamodule("stl10", stl10_root, "data.val_fraction=0", "data.in_memory=true")
    eager_x, _ = all_items(eager.split("train"))
    lazy_x, _ = all_items(dm.split("train"))
    assert torch.equal(eager_x, lazy_x)


def test_stl10_labelled_train_split_has_its_classes(datamodule, stl10_root):
    dm = datamodule("stl10", stl10_root, "data.train_split=train", "data.classes=[cat]",
                    "data.val_fraction=0")
    x, y = all_items(dm.split("train"))
    assert len(x) == 2 and y.tolist() == [0, 0] and dm.class_names == ["cat"]
    with pytest.raises(ConfigError, match=r"data\.classes: stl10 is unlabeled"):
        datamodule("stl10", stl10_root, "data.classes=[cat]").setup()


def test_celeba_uses_the_train_partition_center_crop_and_64px(datamodule, celeba_root):
    dm = datamodule("celeba", celeba_root, "data.val_fraction=0.25")
    assert dm.image_shape == (3, 64, 64) and dm.num_classes == 0
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 64, 64) and (labels == -1).all()
    x, _ = train_and_val(dm)
    assert len(x) == 20  # the official train partition only
    # The 140 px centre crop holds each face square's colour only: no blue background (JPEG q100 error).
    per_image = x.float().mean((2, 3))
    assert (x.float() - per_image[:, :, None, None]).abs().max() <= 8
    expected = torch.from_numpy(celeba_root.colors).float()
    nearest = torch.cdist(per_image, expected).min(1)
    assert nearest.values.max() <= 3 and sorted(nearest.indices.tolist()) == list(range(20))
    assert len(dm.split("test")) == 5
    assert CELEBA_CROP == dm.center_crop


def test_celeba_without_crop_sees_the_background(datamodule, celeba_root):
    x, _ = all_items(datamodule("celeba", celeba_root, "data.center_crop=null").split("train"))
    assert (x[:, 2, 0, 0] > 200).all() and (x[:, 0, 0, 0] < 40).all()  # corner: the blue background


def test_image_folder_labels_come_from_subfolders_and_square_crop_is_exact(datamodule, image_folder_root):
    dm = datamodule("image_folder", image_folder_root, "data.resolution=40", "data.val_fraction=0")
    assert dm.class_names == IMAGE_FOLDER_CLASSES
    x, y = all_items(dm.split("train"))
    cropped = image_folder_root.images[:, :, 4:44, :]  # 40x48 -> centred 40x40, no resize needed
    idx = match_rows(x, cropped)
    assert sorted(idx) == list(range(24)) and y.tolist() == image_folder_root.labels[idx].tolist()
    dm = datamodule("image_folder", image_folder_root, "data.classes=[frog]")
    assert set(all_items(dm.split("train"))[1].tolist()) == {0} and dm.num_classes == 1


def test_flat_image_folder_is_unlabeled(datamodule, flat_image_folder_root):
    dm = datamodule("image_folder", flat_image_folder_root, "data.channels=1", "data.resolution=16")
    x, y = train_and_val(dm)
    assert x.shape == (16, 1, 16, 16) and (y == -1).all() and dm.num_classes == 0


# --------------------------------------------------------------------------- missing and broken datasets
EXPECTED = {
    "mnist": ["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"],
    "fashion_mnist": ["FashionMNIST/raw/train-images-idx3-ubyte", "FashionMNIST/raw/t10k-labels-idx1-ubyte"],
    "cifar10": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)]
    + ["cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"],
    "stl10": [f"stl10_binary/{n}.bin" for n in ("train_X", "train_y", "unlabeled_X", "test_X", "test_y")],
    "celeba": ["celeba/img_align_celeba/", "celeba/list_eval_partition.txt", "celeba/list_attr_celeba.txt",
               "celeba/identity_CelebA.txt", "celeba/list_bbox_celeba.txt",
               "celeba/list_landmarks_align_celeba.txt"],
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_missing_dataset_names_path_expected_files_and_remedy(compose_run, tmp_path, name):
    cfg = compose_run([f"data={name}", f"paths.data_dir={tmp_path}"])
    with pytest.raises(DatasetNotFoundError) as err:
        build_datamodule(cfg.data).setup()
    message = str(err.value)
    assert "\n" not in message and f"dataset {name} not found in {tmp_path}" in message
    for f in EXPECTED[name]:
        assert f in message
    assert "data.download=true" in message and "http" in message


def test_partly_missing_dataset_says_which_files(compose_run, tmp_path, cifar10_root):
    from tests.fixtures.datasets import write_cifar10

    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    cfg = compose_run(["data=cifar10", f"paths.data_dir={tmp_path}"])
    with pytest.raises(DatasetNotFoundError, match=r"missing: cifar-10-batches-py/test_batch\. "):
        build_datamodule(cfg.data).setup()


def test_missing_image_folder(compose_run, tmp_path):
    cfg = compose_run(["data=image_folder", f"paths.data_dir={tmp_path}"])
    with pytest.raises(DatasetNotFoundError, match=rf"{tmp_path}/images \(data.root\) does not exist"):
        build_datamodule(cfg.data).setup()


def test_checksum_mismatch_is_reported_with_the_way_out(datamodule, cifar10_root):
    with pytest.raises(DatasetNotFoundError, match=r"corrupted or incomplete .*data\.verify_checksums=false"):
        datamodule("cifar10", cifar10_root, "data.verify_checksums=true").setup()


@pytest.fixture
def offline(monkeypatch):
    """No network: urllib (torchvision's downloader) goes through a proxy that refuses every connection."""
    refuse = urllib.request.ProxyHandler({"http": "http://127.0.0.1:9", "https": "http://127.0.0.1:9"})
    monkeypatch.setattr(urllib.request, "_opener", urllib.request.build_opener(refuse))


@pytest.mark.parametrize("name,url", [("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
                                      ("cifar10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")])
def test_download_failing_offline_raises_dataset_not_found(compose_run, tmp_path, offline, name, url):
    cfg = compose_run([f"data={name}", f"paths.data_dir={tmp_path}", "data.download=true"])
    dm = build_datamodule(cfg.data)
    with pytest.raises(DatasetNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert f"could not download dataset {name} to {tmp_path}" in message and url in message
    assert EXPECTED[name][0] in message and "\n" not in message


def test_celeba_download_needs_gdown(compose_run, tmp_path):
    if importlib.util.find_spec("gdown") is not None:
        pytest.skip("gdown is installed: the download would really go to Google Drive")
    cfg = compose_run(["data=celeba", f"paths.data_dir={tmp_path}", "data.download=true"])
    with pytest.raises(DatasetNotFoundError, match=r"could not download dataset celeba.*gdown"):
        build_datamodule(cfg.data).prepare_data()


# --------------------------------------------------------------------------- config validation
@pytest.mark.parametrize("override,key", [
    ("data.batch_size=0", "data.batch_size"),
    ("data.resolution=0", "data.resolution"),
    ("data.resolution=-32", "data.resolution"),
    ("data.channels=2", "data.channels"),
    ("data.val_fraction=1.0", "data.val_fraction"),
    ("data.val_fraction=-0.1", "data.val_fraction"),
    ("data.num_workers=-1", "data.num_workers"),
    ("+data.center_crop=0", "data.center_crop"),
    ("data.classes=cat", "data.classes"),
    ("data.source=imagenet", "data.source"),
    ("+data.train_split=train", "data.train_split"),  # an STL10/CelebA option, not CIFAR-10's
])
def test_impossible_values_name_their_key(compose_run, tmp_path, override, key):
    cfg = compose_run(["data=cifar10", f"paths.data_dir={tmp_path}", override])
    with pytest.raises(ConfigError) as err:
        build_datamodule(cfg.data)  # before touching any file
    assert err.value.key == key


def test_crop_larger_than_the_image_names_the_key(datamodule, celeba_root):
    with pytest.raises(ConfigError, match=r"data\.center_crop: 200 px does not fit in a 178x218 image"):
        datamodule("celeba", celeba_root, "data.center_crop=200", "data.in_memory=true").setup()


def test_batch_larger_than_the_data_names_the_key(datamodule, mnist_root):
    with pytest.raises(ConfigError, match=r"data\.batch_size: 64 exceeds the 36 training images"):
        datamodule("mnist", mnist_root, "data.batch_size=64").train_dataloader()


@pytest.mark.parametrize("name", ON_DISK + ["mnist_offline"])
def test_every_data_config_composes_with_the_common_keys(compose_run, name):
    data = compose_run([f"data={name}", "paths.data_dir=/data"]).data
    assert data.name == name and data.source == name and str(data.root).startswith("/data")
    common = ("resolution", "channels", "batch_size", "num_workers", "val_fraction", "in_memory", "download")
    assert all(key in data for key in common)
    assert data.download is False
