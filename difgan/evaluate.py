"""``python -m difgan.evaluate ckpt_path=... n=50000 metrics=[fid,kid,is,pr]``: metrics of a checkpoint.

Generates with EMA weights by default, writes ``metrics.json`` (numbers + protocol) and prints a table.
Under ``torchrun --nproc_per_node=K -m difgan.evaluate ...`` each rank generates and extracts its share and
the numbers equal the single-process ones. Settings not given here come from the run's own ``metrics``
config, stored in the checkpoint. See docs/metrics.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import torch
import torch.distributed as dist
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from difgan.confdir import CONF_DIR
from difgan.devices import pick_device
from difgan.errors import ConfigError, run_reporting_errors

OVERRIDABLE = ("feature_space", "batch_size", "seed", "reference_split", "inception_weights")
# Floats kept in memory per image and feature space (features + IS logits): Inception pool3 + 1008 logits;
# the domain network's features (its class logits, at most a few hundred, are left out of this lower bound).
INCEPTION_FLOATS = 2048 + 1008


def memory_bytes() -> int:
    """This machine's physical memory (bytes)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits_in_memory(n: int, spaces: list[str], domain_feature_dim: int) -> None:
    """Features of every generated image are kept in memory (KID and precision/recall need them all): refuse
    an ``n`` whose features alone exceed the machine's memory, before generating anything. (Real images are
    capped at the dataset split's size, which is in memory already.)"""
    floats = sum(INCEPTION_FLOATS if s == "inception" else domain_feature_dim for s in spaces)
    need, have = n * floats * 4, memory_bytes()
    if need > have:
        most = max(2, have // (floats * 4 * 2))
        raise ConfigError("n", f"{n} generated images need {need / 2**30:.3g} GiB of features in memory "
                          f"({', '.join(spaces)}), more than this machine's {have / 2**30:.3g} GiB: use n of "
                          f"at most about {most}")


def _init_distributed(device: torch.device) -> bool:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return True
    return False


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    from difgan.build import build_datamodule
    from difgan.checkpoint import load_generative_module, resolve_checkpoint
    from difgan.guidance import guidance_from_config, guidance_settings
    from difgan.metrics.config import settings_from_config, validate_metric_names
    from difgan.metrics.distributed import world
    from difgan.metrics.evaluation import Evaluator, format_table, write_metrics_json
    from difgan.models.discriminator import discriminator_report

    try:
        ckpt = resolve_checkpoint(cfg.ckpt_path)
    except MissingMandatoryValue:
        raise ConfigError("ckpt_path", "give a checkpoint file or run folder: ckpt_path=...") from None
    report = discriminator_report(ckpt)
    if report is not None:  # a discriminator (task=train_discriminator): its held-out table per t bucket
        from difgan.discriminator_task import format_heldout

        out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir) / "metrics.json"
        write_metrics_json(report, out)
        print(format_heldout(report["heldout"]))
        print(f"metrics.json -> {out}")
        return report
    metrics = validate_metric_names(cfg.metrics, "metrics")
    if not metrics:
        raise ConfigError("metrics", "name at least one of fid, kid, is, pr")
    if not isinstance(cfg.n, int) or cfg.n < 2:
        raise ConfigError("n", f"must be an integer >= 2, got {cfg.n!r}")
    device = pick_device(str(cfg.device))
    started_dist = _init_distributed(device)
    try:
        module, run_cfg = load_generative_module(ckpt, map_location=device)
        run_metrics = run_cfg.get("metrics") or {}
        merged = OmegaConf.to_container(run_metrics, resolve=True) if isinstance(run_metrics, DictConfig) \
            else dict(run_metrics)
        for key in OVERRIDABLE:
            if cfg.get(key) is not None:
                merged[key] = cfg.get(key)
        settings = settings_from_config(merged)
        check_fits_in_memory(int(cfg.n), settings.spaces_for(str(run_cfg.data.source)),
                             settings.domain_net.feature_dim)
        data_cfg = run_cfg.data
        if cfg.get("data_root"):
            data_cfg = OmegaConf.merge(data_cfg, {"root": str(cfg.data_root)})
        datamodule = build_datamodule(data_cfg, seed=0)
        evaluator = Evaluator(datamodule, settings, Path(cfg.paths.cache_dir), metrics,
                              settings.spaces_for(datamodule.source), n_real=cfg.n_real or cfg.n)
        options = OmegaConf.to_container(cfg.sample_options, resolve=True) if cfg.sample_options else {}
        hooks = guidance_from_config(cfg.get("guidance"), module, device)
        if hooks:
            options["guidance"] = hooks
        result = evaluator.run(module, int(cfg.n), bool(cfg.use_ema), options)
        result["protocol"]["checkpoint"] = str(ckpt)
        result["protocol"]["guidance"] = guidance_settings(hooks)
        if world()[0] == 0:
            out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir) / "metrics.json"
            write_metrics_json(result, out)
            print(format_table(result))
            print(f"metrics.json -> {out}")
        return result
    finally:
        if started_dist:
            dist.destroy_process_group()


CONF = CONF_DIR


def register_configs() -> None:
    """evaluate.yaml through Hydra's ConfigStore (as ``difgan_evaluate``, with ``paths/default.yaml`` inlined
    in place of its defaults list), not through the ``conf`` folder: there ``metrics`` is a config group of
    the run config, which would make ``metrics=[fid,kid]`` a group override; here it is the plain list the
    command line promises. ``config_path`` below names a folder without a ``metrics`` subfolder (with None,
    Hydra may search the calling package, where ``difgan/metrics/`` would again look like a group). Nothing
    else is registered, so other Hydra apps in the same process are unaffected."""
    node = OmegaConf.load(CONF / "evaluate.yaml")
    node.pop("defaults", None)
    node = OmegaConf.merge({"paths": OmegaConf.load(CONF / "paths" / "default.yaml")}, node)
    ConfigStore.instance().store(name="difgan_evaluate", node=node)


register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF / "paths"), config_name="difgan_evaluate")
def main(cfg: DictConfig):
    return run_reporting_errors(evaluate_checkpoint, cfg)


if __name__ == "__main__":
    main()
