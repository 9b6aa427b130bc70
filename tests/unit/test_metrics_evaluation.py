"""The evaluation loop, DDP equality, the in-training callback, run.py's integration points, interpolation."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from difgan.errors import ConfigError
from difgan.metrics import callbacks_from_config, final_evaluation
from difgan.metrics.callback import MetricsCallback
from difgan.metrics.evaluation import Evaluator, format_table
from difgan.metrics.features import extract
from tests.unit.test_metrics_support import (
    TINY_DOMAIN,
    ReplayModule,
    ddp_worker,
    random_inception_weights,
    tiny_settings,
)


@pytest.fixture(scope="module")
def bank(dm):
    # the generator "replays" training images the reference never saw as a set (its own draw with repeats)
    ds = dm.split("train")
    return ds.images[:1000], ds.labels[:1000]


@pytest.fixture(scope="module")
def evaluator(dm, cache):
    return Evaluator(dm, tiny_settings(), cache, ["fid", "kid", "is", "pr"], ["domain"], n_real=300,
                     progress=False).prepare("cpu")


def test_replayed_real_images_score_well_noisy_ones_badly(evaluator, bank):
    good = evaluator.run(ReplayModule(*bank), 300)["metrics"]
    bad = evaluator.run(ReplayModule(*bank, pixel_noise=0.6), 300)["metrics"]
    assert good["fid_domain"] < 0.2 * bad["fid_domain"]
    assert good["kid_domain"] < 0.2 * bad["kid_domain"]
    assert good["precision_domain"] > 0.6 and good["recall_domain"] > 0.6
    assert bad["precision_domain"] < good["precision_domain"]
    assert {"kid_domain_std", "is_domain", "is_domain_std", "recall_domain"} <= set(good)
    assert "class_accuracy" not in good  # unconditional


def test_protocol_is_recorded(evaluator, bank):
    result = evaluator.run(ReplayModule(*bank), 100)
    p = result["protocol"]
    assert p["n_generated"] == 100 and p["n_real"] == 300
    assert p["reference"]["split"] == "train" and p["reference"]["dataset"] == "mnist_offline"
    assert p["weights"] == "raw" and "weights_note" in p  # EMA asked for, the model has none
    assert p["feature_spaces"]["domain"]["classifier_accuracy"] > 0.5
    assert p["settings"]["kid"]["subset_size"] == 50 and p["settings"]["pr"]["k"] == 3
    assert set(p["time_s"]) >= {"generate", "features", "metrics", "total"}
    assert p["sampler"] == {"options": {}, "model": {}} and p["versions"]["torch_fidelity"]
    json.dumps(result)  # serialisable as is
    table = format_table(result)
    assert "fid_domain" in table and "n_generated=100" in table


def test_metrics_do_not_depend_on_batch_size(dm, cache, bank):
    # sample i's latent depends on (seed, i) only: a generator that is a function of its latent (a GAN)
    # gives the same images, features and numbers with any generation/extraction batch size
    runs = [Evaluator(dm, tiny_settings(batch_size=b), cache, ["fid", "kid", "is", "pr"], ["domain"],
                      n_real=300, progress=False).run(ReplayModule(*bank), 150)["metrics"] for b in (16, 150)]
    assert runs[0] == pytest.approx(runs[1], rel=1e-4, abs=1e-7)


def test_feature_extraction_batch_size_does_not_change_metrics(evaluator, bank):
    images = ReplayModule(*bank, pixel_noise=0.2).sample(120, generator=torch.Generator().manual_seed(0))
    from difgan.data.datamodule import to_uint8

    u8 = to_uint8(images)
    space = evaluator.spaces["domain"]
    a = evaluator.compute({"domain": extract(space, u8, 7)}, None)[0]
    b = evaluator.compute({"domain": extract(space, u8, 120)}, None)[0]
    assert a == pytest.approx(b, rel=1e-4, abs=1e-7)


def test_conditional_models_get_class_accuracy(evaluator, bank):
    right = evaluator.run(ReplayModule(*bank, num_classes=10), 200)["metrics"]["class_accuracy"]
    wrong_labels = (bank[1] + 1) % 10  # images whose label is off by one
    wrong = evaluator.run(ReplayModule(bank[0], wrong_labels, num_classes=10), 200)
    wrong = wrong["metrics"]["class_accuracy"]
    assert right > 0.6 and wrong < 0.3


@pytest.mark.slow
def test_ddp_evaluation_equals_single_process(dm, cache, bank, tmp_path):
    import shutil

    import torch.multiprocessing as mp

    single = Evaluator(dm, tiny_settings(batch_size=16), cache, ["fid", "kid", "is", "pr"], ["domain"],
                       n_real=70, progress=False)
    x, y = dm.split("train").images[:300], dm.split("train").labels[:300]
    expected = single.run(ReplayModule(x, y, num_classes=10, pixel_noise=0.1), 60)["metrics"]
    # a fresh cache holding only the domain network, so the ranks also compute the reference themselves
    fresh = tmp_path / "cache"
    shutil.copytree(cache / "feature_nets", fresh / "feature_nets")
    out = tmp_path / "ddp.json"
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(fresh), str(dm.root), str(out)), nprocs=2,
             join=True)
    got = json.loads(out.read_text())
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-8)
    assert list((fresh / "reference").glob("*.pt"))


@pytest.mark.slow
def test_inception_space_end_to_end_offline(dm, tmp_path_factory, cache, bank):
    weights = random_inception_weights(tmp_path_factory)
    ev = Evaluator(dm, tiny_settings(inception_weights=str(weights), batch_size=8), cache,
                   ["fid", "kid", "is"], ["inception"], n_real=3, progress=False)
    result = ev.run(ReplayModule(*bank), 3)
    m = result["metrics"]
    assert {"fid_inception", "kid_inception", "is_inception"} <= set(m)
    assert all(v == v for v in m.values())  # no NaN
    assert result["protocol"]["feature_spaces"]["inception"]["weights"] == str(weights)
    assert result["protocol"]["settings"]["kid"]["subset_size"] == 2


# ------------------------------------------------------------------ integration points for difgan.run
def _metrics_cfg(cache_overrides=None, **sections):
    cfg = {"enabled": True, "feature_space": "auto", "batch_size": 100, "kid_subsets": 5,
           "kid_subset_size": 50,
           "is_splits": 2, "inception_download": False, "domain_net": dict(TINY_DOMAIN),
           "during_training": {"enabled": True, "metrics": ["fid", "kid"], "n": 100, "every_n_epochs": 1,
                               "kid_subsets": 5, "plot": True},
           "final": {"enabled": True, "metrics": ["fid", "kid", "is", "pr"], "n": 120, "use_ema": True}}
    for k, v in sections.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    return OmegaConf.create(cfg)


def test_callback_logs_plots_and_final_evaluation_writes_metrics_json(dm, cache, bank, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    callbacks = callbacks_from_config(_metrics_cfg(), dm, cache)
    assert len(callbacks) == 1 and isinstance(callbacks[0], MetricsCallback)
    module = ReplayModule(*bank, pixel_noise=0.3)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=0, accelerator="cpu",
                        logger=CSVLogger(tmp_path, name="logs", version=0), callbacks=callbacks,
                        default_root_dir=tmp_path, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    rows = list(csv.DictReader(open(tmp_path / "logs" / "version_0" / "metrics.csv")))
    fids = [r for r in rows if r.get("val/fid_domain")]
    assert len(fids) == 2 and all(r["val/kimg"] != "" for r in fids)
    assert "val/kid_domain" in rows[0]
    assert (tmp_path / "metrics_curves.png").stat().st_size > 1000
    history = json.loads((tmp_path / "metrics_history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[0]["fid_domain"] == pytest.approx(history[1]["fid_domain"])  # same latents, same model
    assert "val/fid_domain" in trainer.callback_metrics
    state = callbacks[0].state_dict()
    assert len(state["history"]) == 2 and state["wall_s"] > 0

    result = final_evaluation(module, dm, _metrics_cfg(), tmp_path, cache)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"] == pytest.approx(result["metrics"])
    assert set(saved["metrics"]) >= {"fid_domain", "kid_domain", "is_domain", "precision_domain",
                                     "recall_domain"}
    assert saved["protocol"]["n_generated"] == 120


def test_metrics_can_be_disabled_and_bad_configs_fail_early(dm, cache, tmp_path):
    assert callbacks_from_config(OmegaConf.create({"enabled": False}), dm, cache) == []
    assert final_evaluation(None, dm, OmegaConf.create({"enabled": False}), tmp_path, cache) is None
    assert callbacks_from_config(_metrics_cfg(during_training={"enabled": False}), dm, cache) == []
    with pytest.raises(ConfigError, match="metrics.during_training.metrics"):
        callbacks_from_config(_metrics_cfg(during_training={"metrics": ["fid", "lpips"]}), dm, cache)
    with pytest.raises(ConfigError, match="feature_space"):
        callbacks_from_config(_metrics_cfg(feature_space="clip"), dm, cache)
    with pytest.raises(ConfigError, match="metrics.final.n"):
        callbacks_from_config(_metrics_cfg(final={"n": 0}), dm, cache)
    from difgan.metrics import MetricsError

    with pytest.raises(MetricsError, match="inception_weights="):  # inception asked for, no weights, offline
        callbacks_from_config(_metrics_cfg(feature_space="inception", inception_weights=None), dm, cache)


def test_default_metrics_configs_compose(compose_run):
    from difgan.metrics.config import resolve_spaces, settings_from_config

    cfg = compose_run([])
    s = settings_from_config(cfg.metrics)
    assert s.pr_k == 3 and s.inception_weights is None
    assert resolve_spaces(s.feature_space, "mnist_offline") == ["domain"]
    assert resolve_spaces(s.feature_space, "cifar10") == ["inception"]
    assert resolve_spaces("both", "cifar10") == ["domain", "inception"]
    assert compose_run(["metrics=none"]).metrics.enabled is False


# ------------------------------------------------------------------ interpolation
def test_slerp_and_lerp():
    from difgan.interpolate import lerp, limit_distance, slerp

    a, b = torch.randn(64), torch.randn(64)
    t = torch.linspace(0, 1, 5)
    s = slerp(a, b, t)
    torch.testing.assert_close(s[0], a)
    torch.testing.assert_close(s[-1], b)
    assert (s.norm(dim=1) > 0.5 * min(a.norm(), b.norm())).all()
    torch.testing.assert_close(lerp(a, b, t)[2], (a + b) / 2)
    assert (limit_distance(a, b, 0.1) - a).norm() == pytest.approx(0.1, rel=1e-5)


def test_interpolation_strips_in_z_and_w(bank, tmp_path):
    from difgan.interpolate import interpolate, save_strips

    module = ReplayModule(*bank)
    images, info = interpolate(module, rows=2, steps=5, seed=3)
    assert images.shape == (2, 5, 1, 28, 28) and info["space"] == "z" and info["method"] == "slerp"
    assert save_strips(images, tmp_path / "z.png").stat().st_size > 100

    class WModule(ReplayModule):  # a StyleGAN-like model: a mapping network to w
        latent_spaces = ("z", "w")

        def map_latent(self, z, labels=None, *, use_ema=True):
            return z * 2

        def sample_from_w(self, w, labels=None, *, use_ema=True, **options):
            return self.sample(w.shape[0], labels, noise=w / 2)

    images, info = interpolate(WModule(*bank), rows=1, steps=4, space="auto", max_distance=0.5)
    assert info["space"] == "w" and info["method"] == "lerp" and images.shape == (1, 4, 1, 28, 28)
    with pytest.raises(ConfigError, match="mapping network"):
        interpolate(module, space="w")
