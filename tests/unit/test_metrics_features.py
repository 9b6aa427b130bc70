"""Feature spaces, the domain network and its cache, reference statistics and their fingerprints."""

from __future__ import annotations

import json

import pytest
import torch

from difgan.data.datamodule import to_uint8
from difgan.metrics import MetricsError
from difgan.metrics.domain_net import domain_net_path, ensure_domain_net
from difgan.metrics.features import (
    INCEPTION_FILE,
    DomainFeatures,
    InceptionFeatures,
    extract,
    load_feature_space,
    resolve_inception_weights,
)
from difgan.metrics.reference import reference_statistics
from tests.unit.test_metrics_support import digits, random_inception_weights, tiny_settings


@pytest.fixture(scope="module")
def domain(dm, cache):
    return load_feature_space("domain", tiny_settings(), dm, cache, progress=False)


@pytest.fixture(scope="module")
def inception_path(tmp_path_factory):
    return random_inception_weights(tmp_path_factory)


# ------------------------------------------------------------------ Inception
@pytest.mark.slow
def test_inception_runs_offline_from_a_weights_file(inception_path, dm):
    space = InceptionFeatures(inception_path)
    images = dm.split("train").images[:2]
    out = extract(space, images, batch_size=2)
    assert out["features"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert torch.isfinite(out["features"]).all() and out["features"].std() > 1e-3
    alone = extract(space, images[1:], batch_size=1)  # batch composition does not change features
    torch.testing.assert_close(alone["features"], out["features"][1:], rtol=1e-4, atol=1e-5)
    desc = space.describe()
    assert desc["weights"] == str(inception_path) and "no antialiasing" in desc["resize"]
    assert space.fingerprint.startswith("inception-")


def test_missing_inception_weights_say_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MetricsError) as e:
        resolve_inception_weights(None, download=False)
    msg = str(e.value)
    assert INCEPTION_FILE in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "inception_weights=" in msg and "\n" not in msg
    with pytest.raises(MetricsError, match="not found at"):
        resolve_inception_weights(str(tmp_path / "nope.pth"))


def test_feature_spaces_reject_float_images(domain):
    with pytest.raises(TypeError, match="uint8"):
        domain(torch.zeros(2, 1, 28, 28))


# ------------------------------------------------------------------ domain network
def test_domain_net_is_trained_once_cached_with_its_accuracy(domain, dm, cache):
    assert isinstance(domain, DomainFeatures)
    path = domain_net_path(dm, tiny_settings().domain_net, cache)
    assert path.is_file()
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["accuracy_split"] == "val" and info["n_val"] == 500
    assert info["accuracy"] > 0.5  # three thousand images of training already separate digits
    mtime = path.stat().st_mtime_ns
    _, info2, path2 = ensure_domain_net(dm, tiny_settings().domain_net, cache, progress=False)
    assert path2 == path and path.stat().st_mtime_ns == mtime and info2["accuracy"] == info["accuracy"]
    out = extract(domain, dm.split("val").images[:10], 4)
    assert out["features"].shape == (10, 32) and out["logits"].shape == (10, 10)


def test_domain_net_does_not_depend_on_the_run_seed(dm, cache, tmp_path):
    other = digits(tmp_path, seed=7, val_fraction=0.0)  # another run: other seed, no val split
    assert domain_net_path(other, tiny_settings().domain_net, cache) == \
        domain_net_path(dm, tiny_settings().domain_net, cache)


def test_domain_space_needs_labels(dm, monkeypatch):
    from difgan.metrics.domain_net import train_domain_net

    train = dm.split("train")  # unlabelled data (e.g. CelebA, image folders) has labels -1
    monkeypatch.setattr(train, "labels", torch.full_like(train.labels, -1))
    with pytest.raises(MetricsError, match="feature_space=inception"):
        train_domain_net(dm, tiny_settings().domain_net, progress=False)


# ------------------------------------------------------------------ reference statistics
def test_reference_statistics_are_cached_and_fingerprinted(domain, dm, cache, monkeypatch):
    ref = reference_statistics(domain, dm, "train", 120, cache, batch_size=50, verbose=False)
    assert ref.features.shape == (120, 32) and ref.mu.shape == (32,) and ref.sigma.shape == (32, 32)
    path = ref.info["cache_file"]
    assert "mnist_offline_train_28px_domain_n120_" in path

    import difgan.metrics.reference as reference

    def fail(*a, **k):
        raise AssertionError("recomputed although cached")

    with monkeypatch.context() as m:
        m.setattr(reference, "_extract_real", fail)
        hit = reference_statistics(domain, dm, "train", 120, cache, batch_size=50, verbose=False)
    assert torch.equal(hit.features, ref.features)
    # a different n, split or feature network is a different file
    assert reference_statistics(domain, dm, "train", 100, cache, 50, verbose=False).info["cache_file"] != path
    assert reference_statistics(domain, dm, "val", 100, cache, 50, verbose=False).info["cache_file"] != path
    other = DomainFeatures(domain.net, domain.info, domain.path)
    other._sha = "0" * 64
    assert reference_statistics(other, dm, "train", 120, cache, 50, verbose=False).info["cache_file"] != path


def test_reference_features_do_not_depend_on_extraction_batch_size(domain, dm, tmp_path):
    a = reference_statistics(domain, dm, "train", 90, tmp_path / "a", batch_size=90, verbose=False)
    b = reference_statistics(domain, dm, "train", 90, tmp_path / "b", batch_size=13, verbose=False)
    torch.testing.assert_close(a.features, b.features, rtol=1e-5, atol=1e-6)


def test_to_uint8_rounds_like_real_images(dm):
    real = dm.split("val").images[:4]
    assert torch.equal(to_uint8(real.float() / 127.5 - 1), real)
