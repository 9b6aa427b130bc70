"""Run-config validation: impossible values stop the run before any work, with one line naming the key."""

from __future__ import annotations

from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf

from difgan.errors import ConfigError
from difgan.validation import check_choice, check_int


def validate_run_config(cfg: DictConfig, tasks: Iterable[str], multirun: bool = False,
                        launcher: str | None = None) -> None:
    """``tasks``: the valid ``task`` names (``difgan.run.TASKS``, the one table)."""
    check_choice("task", cfg.task, tuple(tasks))
    if cfg.seed is None or not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError("seed", f"must be an integer (0 is fine), got {cfg.seed!r}")
    kimg = cfg.max_kimg
    if kimg is not None and (isinstance(kimg, bool) or not isinstance(kimg, int | float) or kimg <= 0):
        raise ConfigError("max_kimg", f"must be a positive number of thousands of images, got {kimg!r}")
    for key, minimum in (("data.batch_size", 1), ("data.resolution", 1), ("data.num_workers", 0),
                         ("callbacks.samples.every_n_batches", 0), ("callbacks.samples.n", 1),
                         ("trainer.num_nodes", 1)):
        check_int(key, OmegaConf.select(cfg, key), minimum, allow_none=True)
    if cfg.data.get("channels") not in (1, 3):
        raise ConfigError("data.channels", f"must be 1 or 3, got {cfg.data.get('channels')!r}")
    strategy = str(cfg.trainer.get("strategy", "auto"))
    relaunches = strategy.startswith("ddp") and "spawn" not in strategy
    if multirun and strategy.startswith("ddp") and "joblib" in (launcher or ""):
        raise ConfigError(
            "trainer.strategy",
            f"{strategy!r} inside joblib workers (hydra/launcher=local_parallel) crashes: sweep DDP runs one "
            "at a time (the default launcher with trainer=ddp_spawn) or on SLURM (hydra/launcher=slurm)")
    if multirun and relaunches and "submitit" not in (launcher or ""):
        raise ConfigError(
            "trainer.strategy",
            f"{strategy!r} relaunches the whole command on every rank, so a local multirun (-m) would run "
            "the sweep once per GPU. Use trainer=ddp_spawn for local sweeps, hydra/launcher=slurm on a "
            "cluster, or drop -m for a single DDP run")
