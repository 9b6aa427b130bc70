"""What ``difgan.run`` calls: the in-training callback, the final evaluation, and task=train_features."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from difgan.data.datamodule import ImageDataModule
from difgan.metrics.callback import MetricsCallback
from difgan.metrics.config import MetricsError, resolve_spaces, settings_from_config, validate_metric_names
from difgan.metrics.distributed import world
from difgan.metrics.evaluation import Evaluator, format_table, write_metrics_json
from difgan.metrics.features import resolve_inception_weights
from difgan.validation import check_int, require


def _section(metrics_cfg, name: str) -> dict:
    node = metrics_cfg.get(name) if metrics_cfg is not None else None
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node or {})


def _enabled(metrics_cfg) -> bool:
    return bool(metrics_cfg) and bool(metrics_cfg.get("enabled", True))


def validate_metrics_config(metrics_cfg, datamodule: ImageDataModule | None = None) -> None:
    """Check every metrics setting before any work (names, sizes, spaces, Inception weights present)."""
    if not _enabled(metrics_cfg):
        return
    settings = settings_from_config(metrics_cfg)
    spaces = set()
    for where in ("during_training", "final"):
        sec = _section(metrics_cfg, where)
        if not sec.get("enabled", True):
            continue
        validate_metric_names(sec.get("metrics", []), f"metrics.{where}.metrics")
        check_int(f"metrics.{where}.n", sec.get("n"), minimum=2)
        if where == "during_training":
            check_int(f"metrics.{where}.every_n_epochs", sec.get("every_n_epochs"), allow_none=True)
            kimg = sec.get("every_n_kimg")
            require(f"metrics.{where}.every_n_kimg", kimg, kimg is None or (
                isinstance(kimg, int | float) and not isinstance(kimg, bool) and kimg > 0),
                "a positive number")
        source = datamodule.source if datamodule is not None else "mnist"
        spaces |= set(resolve_spaces(sec.get("feature_space") or settings.feature_space, source,
                                     f"metrics.{where}.feature_space"))
    if "inception" in spaces:
        resolve_inception_weights(settings.inception_weights, settings.inception_download)
    if "domain" in spaces and datamodule is not None and datamodule.num_classes < 2:
        raise MetricsError(f"the domain feature space needs class labels and {datamodule.name} has none: "
                           "set metrics.feature_space=inception")


def callbacks_from_config(metrics_cfg, datamodule: ImageDataModule, cache_dir) -> list[L.Callback]:
    """The in-training metrics callback (an empty list when metrics or during_training are disabled)."""
    if not _enabled(metrics_cfg):
        return []
    validate_metrics_config(metrics_cfg, datamodule)
    sec = _section(metrics_cfg, "during_training")
    if not sec.get("enabled", True) or not sec.get("metrics"):
        return []
    settings = settings_from_config(metrics_cfg)
    n = int(sec.get("n", 500))
    evaluator = Evaluator(datamodule, settings, Path(cache_dir), validate_metric_names(sec["metrics"], "m"),
                          settings.spaces_for(datamodule.source, sec.get("feature_space")),
                          n_real=sec.get("n_real") or n, kid_subsets=sec.get("kid_subsets"))
    return [MetricsCallback(evaluator, n=n, every_n_epochs=sec.get("every_n_epochs"),
                            every_n_kimg=sec.get("every_n_kimg"), use_ema=sec.get("use_ema", True),
                            sample_options=sec.get("sample_options"), plot=sec.get("plot", True))]


def final_evaluation(module, datamodule: ImageDataModule, metrics_cfg, run_dir: Path,
                     cache_dir) -> dict | None:
    """After training: the configured final metrics, written to ``run_dir/metrics.json`` (rank 0) and
    returned (on every rank; under DDP every rank must call this)."""
    if not _enabled(metrics_cfg):
        return None
    sec = _section(metrics_cfg, "final")
    if not sec.get("enabled", True) or not sec.get("metrics"):
        return None
    settings = settings_from_config(metrics_cfg)
    n = int(sec.get("n", 1000))
    evaluator = Evaluator(datamodule, settings, Path(cache_dir), validate_metric_names(sec["metrics"], "m"),
                          settings.spaces_for(datamodule.source, sec.get("feature_space")),
                          n_real=sec.get("n_real") or n)
    module.eval()
    result = evaluator.run(module, n, sec.get("use_ema", True), sec.get("sample_options"))
    if world()[0] == 0:
        path = write_metrics_json(result, Path(run_dir) / "metrics.json")
        print(format_table(result))
        print(f"metrics -> {path}")
    return result


def run_task_train_features(cfg: DictConfig) -> None:
    """``python -m difgan.run task=train_features data=<dataset>``: train (once) and cache the in-domain
    feature network for ``cfg.data``; prints where it is and its held-out accuracy."""
    from difgan.build import build_datamodule
    from difgan.metrics.domain_net import domain_net_path, ensure_domain_net
    from difgan.metrics.realdata import canonical_datamodule

    dm = canonical_datamodule(build_datamodule(cfg.data, seed=0))
    settings = settings_from_config(cfg.get("metrics"))
    cache_dir = Path(cfg.paths.cache_dir)
    path = domain_net_path(dm, settings.domain_net, cache_dir)
    existed = path.is_file()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _, info, path = ensure_domain_net(dm, settings.domain_net, cache_dir, device)
    if existed:
        print(f"domain feature network for {dm.name} already trained (delete it to retrain)")
    print(f"domain feature network: {path}\n  accuracy {info['accuracy']:.4f} on {info['accuracy_split']} "
          f"({info['n_train']} training images, {info['train_time_s']} s)\n"
          f"  details: {path.with_suffix('.json')}")
