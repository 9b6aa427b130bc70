"""The in-domain feature network: a small classifier trained by the suite on the dataset itself.

Inception-v3 was trained on ImageNet photographs; on MNIST-like digits its features say little (seeds 000
and 001). Seed 000 proposes the fix used here: train a classifier on the dataset and use its penultimate
features for FID/KID/precision-recall, its logits for IS, and its predictions for the class accuracy of
conditional models. The network is trained once per dataset (source, resolution, channels, classes,
limit) and training settings, then cached under ``<cache_dir>/feature_nets/`` with its held-out accuracy.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from difgan.data.datamodule import ImageDataModule, to_signed_float
from difgan.metrics.config import DomainNetSettings, MetricsError
from difgan.metrics.distributed import barrier, world
from difgan.metrics.realdata import canonical_datamodule, data_identity, fingerprint, split_images

FORMAT_VERSION = 2


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class DomainNet(nn.Module):
    """conv-pool, conv-pool, fully connected -> ``feature_dim`` features (after ReLU) -> class logits.

    A LeNet-like classifier, cheap on CPU; takes float images in [-1, 1]. The features are the input of the
    last (classification) layer, as Inception's pool3 is for FID.
    """

    def __init__(self, in_channels: int, resolution: int, num_classes: int, width: int = 16,
                 feature_dim: int = 128):
        super().__init__()
        w = width
        self.arch = {"in_channels": in_channels, "resolution": resolution, "num_classes": num_classes,
                     "width": width, "feature_dim": feature_dim}
        self.body = nn.Sequential(*_block(in_channels, w), nn.MaxPool2d(2),
                                  *_block(w, 2 * w), nn.MaxPool2d(2), nn.Flatten())
        flat = 2 * w * (resolution // 4) ** 2
        self.fc = nn.Sequential(nn.Linear(flat, feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.fc(self.body(x))
        return f, self.head(self.dropout(f))

    def forward(self, x: Tensor) -> Tensor:
        return self.features_and_logits(x)[1]


def domain_net_path(dm: ImageDataModule, settings: DomainNetSettings, cache_dir: Path) -> Path:
    ident = {"data": data_identity(dm), "settings": vars(settings), "format": FORMAT_VERSION}
    return (Path(cache_dir).expanduser() / "feature_nets"
            / f"{dm.name}_{dm.resolution}px_{dm.channels}ch_{fingerprint(ident)}.pt")


@contextmanager
def file_lock(path: Path):
    """An exclusive lock on ``path`` + '.lock' (other processes wait), so only one trains or writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _augment(x: Tensor, g: torch.Generator, shift: int = 2) -> Tensor:
    """Random translations of up to ``shift`` pixels (replicate padding), one per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]
    return shifted.permute(0, 3, 1, 2).contiguous()  # contiguous: strided inputs make CPU convs crawl


@torch.no_grad()
def accuracy(net: DomainNet, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    device = next(net.parameters()).device
    net.eval()
    correct = 0
    for i in range(0, images.shape[0], batch_size):
        x = to_signed_float(images[i:i + batch_size].to(device))
        correct += int((net(x).argmax(1).cpu() == labels[i:i + batch_size]).sum())
    return correct / max(1, images.shape[0])


def train_domain_net(dm: ImageDataModule, settings: DomainNetSettings, device: torch.device | str = "cpu",
                     progress: bool = True) -> tuple[DomainNet, dict]:
    """Train the classifier on the canonical train split; accuracy on the held-out split.
    Returns (net, info)."""
    dm = canonical_datamodule(dm)
    train, val = dm.split("train"), dm.split("val")
    x_tr, y_tr = split_images(train, torch.arange(len(train)), desc="reading train split")
    if (y_tr < 0).any() or dm.num_classes < 2:
        raise MetricsError(f"the domain feature space needs class labels, and {dm.name} has none: "
                           "use feature_space=inception for this dataset")
    x_va, y_va = split_images(val, torch.arange(len(val)), desc="reading val split")
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    g = torch.Generator().manual_seed(settings.seed)
    net = DomainNet(dm.channels, dm.resolution, dm.num_classes, settings.width, settings.feature_dim)
    net = net.to(device)
    steps = max(1, math.ceil(settings.train_kimg * 1000 / settings.batch_size))
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=steps, pct_start=0.15)
    x_dev, y_dev = x_tr.to(device), y_tr.to(device)
    start = time.perf_counter()
    net.train()
    bar = tqdm(range(steps), desc=f"training domain feature net on {dm.name}", disable=not progress,
               dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(0, x_tr.shape[0], (settings.batch_size,), generator=g).to(device)
        x = _augment(to_signed_float(x_dev[idx]), g)
        loss = F.cross_entropy(net(x), y_dev[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    net.eval()
    held_out = x_va.shape[0] > 0
    acc = accuracy(net, x_va, y_va) if held_out else accuracy(net, x_tr, y_tr)
    info = {"accuracy": acc, "accuracy_split": "val" if held_out else "train (no held-out images)",
            "n_train": int(x_tr.shape[0]), "n_val": int(x_va.shape[0]), "classes": dm.class_names,
            "train_time_s": round(time.perf_counter() - start, 2), "settings": vars(settings),
            "data": data_identity(dm), "arch": net.arch, "format": FORMAT_VERSION}
    return net.cpu(), info


def save_domain_net(net: DomainNet, info: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state_dict": net.state_dict(), "info": info}, tmp)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))


def load_domain_net(path: Path) -> tuple[DomainNet, dict]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        arch = blob["info"]["arch"]
        net = DomainNet(arch["in_channels"], arch["resolution"], arch["num_classes"], arch["width"],
                        arch["feature_dim"])
        net.load_state_dict(blob["state_dict"])
    except Exception as e:  # noqa: BLE001 - any corruption reads the same to the user
        raise MetricsError(f"cannot read the domain feature network {path} ({type(e).__name__}: {e}); "
                           "delete it and it is retrained") from None
    return net.eval().requires_grad_(False), blob["info"]


def ensure_domain_net(dm: ImageDataModule, settings: DomainNetSettings, cache_dir: Path,
                      device: torch.device | str = "cpu", progress: bool = True,
                      retrain: bool = False) -> tuple[DomainNet, dict, Path]:
    """The cached domain network for ``dm``, trained first when missing (once: other processes wait on a
    file lock; under DDP rank 0 trains while the others wait at a barrier)."""
    dm = canonical_datamodule(dm)
    path = domain_net_path(dm, settings, cache_dir)
    rank, _ = world()
    if rank == 0:
        with file_lock(path):
            if retrain or not path.is_file():
                if not retrain:
                    print(f"no domain feature network for {dm.name} yet: training it once "
                          f"(cached at {path})", flush=True)
                net, info = train_domain_net(dm, settings, device, progress)
                save_domain_net(net, info, path)
                print(f"domain feature network: accuracy {info['accuracy']:.4f} on {info['accuracy_split']} "
                      f"({info['train_time_s']} s) -> {path}", flush=True)
    barrier()
    net, info = load_domain_net(path)
    return net, info, path
