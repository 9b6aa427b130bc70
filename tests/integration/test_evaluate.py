"""End to end: a short DCGAN run with metrics on, then ``difgan.evaluate`` and ``difgan.interpolate`` on its
checkpoint, through the real Hydra entry points (run in this process to save interpreter starts)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tests.integration.runner import entry, one_line_error

pytestmark = pytest.mark.slow


TINY_METRICS = ["metrics.domain_net.train_kimg=1", "metrics.domain_net.width=8",
                "metrics.domain_net.feature_dim=32",
                "metrics.batch_size=16", "metrics.kid_subset_size=10", "metrics.is_splits=2",
                "metrics.inception_download=false", "metrics.during_training.n=20",
                "metrics.during_training.kid_subsets=3", "metrics.final.n=24"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_root):
    base = tmp_path_factory.mktemp("evaluate")
    run_dir, cache = base / "run", base / "cache"
    result = entry("difgan.run", "model=dcgan", "model.base_channels=8", "model.latent_dim=16", "data=mnist",
                   f"paths.data_dir={mnist_root.data_dir}", "data.batch_size=8", "logger=csv",
                   "trainer.enable_progress_bar=false", "trainer.max_epochs=2", "callbacks.samples.n=4",
                   f"paths.cache_dir={cache}", f"hydra.run.dir={run_dir}", *TINY_METRICS)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, cache, result


def test_training_run_tracks_and_writes_metrics(run):
    run_dir, cache, result = run
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert set(saved["metrics"]) >= {"fid_domain", "kid_domain", "is_domain", "precision_domain",
                                     "recall_domain"}
    p = saved["protocol"]
    assert p["n_generated"] == 24 and p["weights"] == "ema" and p["metric_spaces"] == ["domain"]
    assert "fid_domain" in result.stdout  # the table
    rows = list(csv.DictReader(open(run_dir / "logs" / "metrics.csv")))
    assert sum(1 for r in rows if r.get("val/fid_domain")) == 2  # every epoch
    assert (run_dir / "metrics_curves.png").is_file()
    assert list((cache / "feature_nets").glob("mnist_28px_1ch_*.pt"))
    assert list((cache / "reference").glob("mnist_train_28px_domain_n20_*.pt"))
    m = saved["metrics"]
    assert m["fid_domain"] > 0 and m["kid_domain"] > -1 and m["is_domain"] >= 1  # IS: exp(KL) >= 1
    for key in ("precision_domain", "recall_domain"):  # fractions of the 24 generated / 24 real images
        assert 0 <= m[key] <= 1 and abs(m[key] * 24 - round(m[key] * 24)) < 1e-9, (key, m[key])
    assert all(float(r["val/fid_domain"]) > 0 for r in rows if r.get("val/fid_domain"))


def test_evaluate_prints_a_table_and_writes_metrics_json(run, tmp_path):
    run_dir, cache, _ = run
    out = tmp_path / "m.json"
    result = entry("difgan.evaluate", f"ckpt_path={run_dir}", "n=24", "metrics=[fid,kid,is,pr]", f"out={out}",
                   f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fid_domain" in result.stdout and "n_generated=24" in result.stdout and str(out) in result.stdout
    saved = json.loads(out.read_text())
    p = saved["protocol"]
    assert p["checkpoint"].endswith("last.ckpt") and p["weights"] == "ema" and p["n_generated"] == 24
    assert p["n_real"] == 24 and p["reference"]["split"] == "train" and p["model"] == "DCGAN"
    # the same checkpoint, n, seed and reference as the run's final evaluation: the same numbers
    final = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert saved["metrics"].keys() == final.keys()
    for key, value in final.items():
        assert saved["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert p["feature_spaces"]["domain"]["weights"].startswith(str(cache))
    assert {"generate", "features", "metrics", "total"} <= set(p["time_s"])

    raw = entry("difgan.evaluate", f"ckpt_path={run_dir}", "n=30", "metrics=[fid]", "use_ema=false",
                f"out={tmp_path / 'raw.json'}", f"paths.cache_dir={cache}",
                f"hydra.run.dir={tmp_path / 'eval2'}")
    assert raw.returncode == 0, raw.stderr[-3000:]
    raw_saved = json.loads((tmp_path / "raw.json").read_text())
    assert raw_saved["protocol"]["weights"] == "raw" and set(raw_saved["metrics"]) == {"fid_domain"}
    assert raw_saved["metrics"]["fid_domain"] != saved["metrics"]["fid_domain"]  # other weights, other images


def test_evaluate_errors_are_one_line(run, tmp_path, monkeypatch):
    run_dir, cache, _ = run
    missing = entry("difgan.evaluate", f"ckpt_path={tmp_path / 'nope.ckpt'}",
                    f"hydra.run.dir={tmp_path / 'e'}")
    assert "checkpoint not found" in one_line_error(missing)
    bad = entry("difgan.evaluate", f"ckpt_path={run_dir}", "metrics=[fid,lpips]",
                f"hydra.run.dir={tmp_path / 'e'}")
    assert "lpips" in one_line_error(bad)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    no_weights = entry("difgan.evaluate", f"ckpt_path={run_dir}", "n=4", "feature_space=inception",
                       f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'e'}")
    line = one_line_error(no_weights)
    assert "weights-inception-2015-12-05-6726825d.pth" in line and str(tmp_path / "torch") in line


def test_interpolate_writes_strips(run, tmp_path):
    run_dir, _, _ = run
    result = entry("difgan.interpolate", f"ckpt_path={run_dir}", "rows=2", "steps=5", f"out={tmp_path}",
                   f"hydra.run.dir={tmp_path / 'i'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "interpolation_z.png").stat().st_size > 100 and "slerp" in result.stdout


def test_task_train_features_trains_and_reports_the_domain_network(tmp_path, mnist_root):
    cache = tmp_path / "cache"
    result = entry("difgan.run", "task=train_features", "data=mnist",
                   f"paths.data_dir={mnist_root.data_dir}", f"paths.cache_dir={cache}",
                   f"hydra.run.dir={tmp_path / 'run'}", "logger=csv", *TINY_METRICS)
    assert result.returncode == 0, result.stderr[-3000:]
    nets = list((cache / "feature_nets").glob("mnist_28px_1ch_*.pt"))
    assert len(nets) == 1 and str(nets[0]) in result.stdout and "accuracy" in result.stdout
    info = json.loads(nets[0].with_suffix(".json").read_text())
    assert info["n_train"] == 36 and info["n_val"] == 4 and info["accuracy_split"] == "val"
    # the reported accuracy is the cached network's on the held-out split, recomputed here
    from difgan.build import build_datamodule
    from difgan.confdir import compose_config
    from difgan.metrics.domain_net import accuracy, load_domain_net
    from difgan.metrics.realdata import canonical_datamodule, split_images

    net, _ = load_domain_net(nets[0])
    dm = canonical_datamodule(build_datamodule(compose_config("run", [
        "data=mnist", f"paths.data_dir={mnist_root.data_dir}"]).data))
    val = dm.split("val")
    images, labels = split_images(val, torch.arange(len(val)), desc="val")
    assert info["accuracy"] == accuracy(net, images, labels)
    assert f"accuracy {info['accuracy']:.4f} on val" in result.stdout
