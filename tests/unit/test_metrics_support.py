"""Shared helpers for the metrics tests (no tests here): a tiny GenerativeModule that replays real images,
the offline digits datamodule, tiny metric settings, a session-wide metrics cache, and an Inception-v3 file
with random weights (same architecture as torch-fidelity's, so the real Inception code path runs offline).

The cache lives in pytest's session base temp, so the domain network is trained once per session (the
suite's own file cache and lock do the de-duplication).
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from difgan.data import ImageDataModule
from difgan.data.datamodule import to_signed_float
from difgan.metrics.config import DomainNetSettings, MetricsSettings
from difgan.models.base import GenerativeModule

TINY_DOMAIN = {"train_kimg": 3, "batch_size": 128, "lr": 3e-3, "width": 8, "feature_dim": 32, "seed": 0}


def tiny_settings(**overrides) -> MetricsSettings:
    base = dict(batch_size=64, kid_subsets=10, kid_subset_size=50, is_splits=2,
                domain_net=DomainNetSettings(**TINY_DOMAIN), inception_download=False)
    base.update(overrides)
    return MetricsSettings(**base)


def digits(root: Path, channels: int = 1, seed: int = 0, val_fraction: float = 0.1) -> ImageDataModule:
    return ImageDataModule(source="mnist_offline", root=str(root), resolution=28, channels=channels,
                           batch_size=32, val_fraction=val_fraction, seed=seed)


def session_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "metrics_cache"
    path.mkdir(exist_ok=True)
    return path


def random_inception_weights(tmp_path_factory) -> Path:
    """A state_dict of torch-fidelity's FeatureExtractorInceptionV3 with random weights, BatchNorm statistics
    calibrated on random images so activations neither vanish nor explode."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = tmp_path_factory.getbasetemp() / "inception_random.pth"
    if path.is_file():
        return path
    torch.manual_seed(0)
    no_download = mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url",
                             return_value={})
    with no_download, mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch gives its exact statistics
    net.train()
    with torch.no_grad():
        net(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    torch.save(net.state_dict(), path)
    return path


class ReplayModule(GenerativeModule):
    """'Generates' real images picked by a deterministic function of the noise (plus optional pixel noise):
    with a real bank, FID against real data is small; with ``pixel_noise`` large, it grows."""

    def __init__(self, images, labels=None, num_classes: int = 0, pixel_noise: float = 0.0):
        super().__init__(tuple(images.shape[1:]), num_classes)
        self.register_buffer("bank", to_signed_float(images))
        self.register_buffer("bank_labels", labels if labels is not None else torch.zeros(len(images)).long())
        self.pixel_noise = pixel_noise
        self.net = nn.Linear(1, 1)

    def sampling_network(self) -> nn.Module:
        return self.net

    @property
    def noise_shape(self):
        return (4,)

    def generate(self, net, n, labels, generator, noise=None, **options):
        z = noise if noise is not None else torch.randn(n, 4, device=self.device, generator=generator)
        key = (z[:, 0].abs() * 1e6).long()
        if labels is None:
            idx = key % len(self.bank)
        else:
            idx = torch.empty(n, dtype=torch.long, device=self.device)
            for c in labels.unique():
                pool = (self.bank_labels == c).nonzero().flatten()
                sel = labels == c
                idx[sel] = pool[key[sel] % len(pool)]
        x = self.bank[idx]
        if self.pixel_noise:
            x = x + self.pixel_noise * torch.randn(x.shape, device=self.device, generator=generator)
        return x

    def training_step(self, batch, batch_idx):
        return self.net(batch[0].mean((1, 2, 3))[:, None]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def ddp_worker(rank: int, world_size: int, init_file: str, cache: str, root: str, out: str) -> None:
    """One rank of the DDP evaluation test: evaluate and (rank 0) write the result."""
    import torch.distributed as dist

    from difgan.metrics.evaluation import Evaluator

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        dm = digits(Path(root))
        x, y = dm.split("train").images[:300], dm.split("train").labels[:300]
        module = ReplayModule(x, y, num_classes=10, pixel_noise=0.1)
        ev = Evaluator(dm, tiny_settings(batch_size=16), cache, ["fid", "kid", "is", "pr"], ["domain"],
                       n_real=70, progress=False)
        result = ev.run(module, 60)
        if rank == 0:
            Path(out).write_text(json.dumps(result["metrics"]))
    finally:
        dist.destroy_process_group()
