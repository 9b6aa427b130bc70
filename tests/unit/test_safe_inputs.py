"""Nothing foreign runs and bad inputs are handled (issue 12): Inception weights files are read without
unpickling code; truncated images in an image folder are skipped with a counted warning naming them; an
evaluation size that cannot fit in memory is refused; equal domain-network settings hit the same cache."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from difgan.metrics.config import MetricsError
from difgan.metrics.features import InceptionFeatures, default_inception_path, resolve_inception_weights


class Payload:
    """Unpickling this creates a folder: proof that the file was unpickled with full pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("where", ["inception_weights", "hub_cache"])
def test_an_inception_weights_payload_never_runs(tmp_path, monkeypatch, where):
    marker = tmp_path / "payload_ran"
    if where == "hub_cache":  # the file torch-fidelity would otherwise find by itself
        monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch" / "hub"))
        path = default_inception_path()
        path.parent.mkdir(parents=True)
    else:
        path = tmp_path / "weights.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "x": Payload(marker)}, path)
    assert pickle.loads(pickle.dumps(Payload(tmp_path / "probe"))) is None and (tmp_path / "probe").is_dir()
    resolved = resolve_inception_weights(str(path) if where == "inception_weights" else None, download=False)
    with pytest.raises(MetricsError, match="not a plain state dict of tensors.*refused to unpickle"):
        InceptionFeatures(resolved)
    assert not marker.exists()


@pytest.mark.parametrize(("layout", "in_memory", "workers"), [
    ("flat", True, 0), ("classes", True, 0), ("flat", False, 2), ("classes", False, 1)])
def test_a_truncated_image_is_skipped_with_a_warning_naming_it(tmp_path, capsys, layout, in_memory, workers):
    from difgan.data import ImageDataModule
    from tests.fixtures.datasets import write_image_folder

    classes = ["cat", "dog"] if layout == "classes" else None
    write_image_folder(tmp_path, classes, per_class=4, size=(12, 12))
    bad = tmp_path / ("dog" if classes else "") / "img_02.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # a copy cut short
    total = 8 if classes else 4
    dm = ImageDataModule("image_folder", str(tmp_path), resolution=8, channels=3, batch_size=1,
                         in_memory=in_memory, num_workers=workers)
    dm.setup()
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and f"skipping 1 unreadable image file(s) of {total}" in warning[0]
    assert str(bad.relative_to(tmp_path)) in warning[0] and "truncated" in warning[0]
    assert len(dm.split("train")) == total - 1
    batches = list(dm.train_dataloader())  # every remaining image loads, with worker processes too
    assert sum(b[0].shape[0] for b in batches) == total - 1
    if classes:
        assert sorted(int(y) for b in batches for y in b[1]) == [0] * 4 + [1] * 3


def test_equal_domain_net_settings_hit_the_same_cache(tmp_path):
    """30 and 30.0 kimg (an int on the command line, a float in the yaml): one setting, one cache file."""
    from difgan.data import ImageDataModule
    from difgan.metrics.config import DomainNetSettings, settings_from_config
    from difgan.metrics.domain_net import domain_net_path

    dm = ImageDataModule("mnist_offline", "unused", 28, 1, batch_size=8, limit=64)
    paths = {domain_net_path(dm, s, tmp_path) for s in (
        DomainNetSettings(train_kimg=30), DomainNetSettings(train_kimg=30.0), DomainNetSettings(),
        DomainNetSettings(batch_size=256.0, lr=0.002),
        settings_from_config({"domain_net": {"train_kimg": 30, "seed": 0}}).domain_net)}
    assert len(paths) == 1, paths
    assert domain_net_path(dm, DomainNetSettings(train_kimg=31), tmp_path) not in paths  # a real change


def test_evaluate_refuses_an_n_that_cannot_fit_in_memory(tmp_path):
    """``python -m difgan.evaluate n=1000000000000``: one line naming n, before anything is generated."""
    from omegaconf import OmegaConf

    from difgan.build import build_model
    from difgan.checkpoint import LAST
    from difgan.confdir import compose_config
    from tests.integration.runner import entry, one_line_error

    run = compose_config("run", ["model.base_channels=4", "model.latent_dim=8"])
    cfg = {k: OmegaConf.to_container(run[k], resolve=True) for k in ("model", "data", "metrics")}
    shape = [cfg["data"]["channels"], cfg["data"]["resolution"], cfg["data"]["resolution"]]
    model = build_model(OmegaConf.create(cfg["model"]), tuple(shape), 0)
    ckpt = tmp_path / "run" / LAST
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), "difgan": {"config": cfg, "image_shape": shape,
                                                             "num_classes": 0}}, ckpt)
    line = one_line_error(entry("difgan.evaluate", f"ckpt_path={tmp_path / 'run'}", "n=1000000000000",
                                f"hydra.run.dir={tmp_path / 'eval'}"))
    assert line.startswith("error: config error: n: 1000000000000 generated images need ") and "GiB" in line
