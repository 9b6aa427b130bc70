"""Run-config validation: impossible values stop the run before any work, with one line naming the key."""

from __future__ import annotations

from omegaconf import DictConfig

from difgan.errors import ConfigError

TASKS = ("train", "train_features", "train_discriminator")


def _positive_int(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, DictConfig) else None
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(key, f"must be a {kind} integer, got {value!r}")


def validate_run_config(cfg: DictConfig, multirun: bool = False,
                        launcher: str | None = None) -> None:
    if cfg.task not in TASKS:
        raise ConfigError("task", f"unknown task {cfg.task!r}; valid: {', '.join(TASKS)}")
    if cfg.seed is None or not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError("seed", f"must be an integer (0 is fine), got {cfg.seed!r}")
    if cfg.max_kimg is not None and not (isinstance(cfg.max_kimg, int | float) and cfg.max_kimg > 0):
        raise ConfigError("max_kimg",
                          f"must be a positive number of thousands of images, got {cfg.max_kimg!r}")
    for key in ("data.batch_size", "data.resolution"):
        _positive_int(cfg, key)
    for key in ("data.num_workers", "callbacks.samples.every_n_batches"):
        _positive_int(cfg, key, allow_zero=True)
    if cfg.data.get("channels") not in (1, 3):
        raise ConfigError("data.channels", f"must be 1 or 3, got {cfg.data.get('channels')!r}")
    _positive_int(cfg, "callbacks.samples.n")
    strategy = str(cfg.trainer.get("strategy", "auto"))
    relaunches = strategy.startswith("ddp") and "spawn" not in strategy
    if multirun and relaunches and "submitit" not in (launcher or ""):
        raise ConfigError(
            "trainer.strategy",
            f"{strategy!r} relaunches the whole command on every rank, so a local multirun (-m) would run "
            "the sweep once per GPU. Use trainer=ddp_spawn for local sweeps, hydra/launcher=slurm on a "
            "cluster, or drop -m for a single DDP run")
