"""Run-config validation: impossible values stop the run before any work, with one line naming the key."""

from __future__ import annotations

from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf

from difgan.errors import ConfigError
from difgan.validation import check_choice, check_int, require

SEED_MAX = 2**32 - 1  # numpy's seed range; torch and python accept it too


def validate_run_config(cfg: DictConfig, tasks: Iterable[str], multirun: bool = False,
                        launcher: str | None = None) -> None:
    """``tasks``: the valid ``task`` names (``difgan.run.TASKS``, the one table)."""
    check_choice("task", cfg.task, tuple(tasks))
    seed_ok = isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and 0 <= cfg.seed <= SEED_MAX
    require("seed", cfg.seed, seed_ok, f"a seed is an integer in [0, {SEED_MAX}], 0 is fine")
    kimg = cfg.max_kimg
    if kimg is not None and (isinstance(kimg, bool) or not isinstance(kimg, int | float) or kimg <= 0):
        raise ConfigError("max_kimg", f"must be a positive number of thousands of images, got {kimg!r}")
    for key, minimum in (("data.batch_size", 1), ("data.resolution", 1), ("data.num_workers", 0),
                         ("callbacks.samples.every_n_batches", 0), ("callbacks.samples.n", 1),
                         ("trainer.num_nodes", 1)):
        check_int(key, OmegaConf.select(cfg, key), minimum, allow_none=True)
    if cfg.data.get("channels") not in (1, 3):
        raise ConfigError("data.channels", f"must be 1 or 3, got {cfg.data.get('channels')!r}")
    validate_trainer(cfg.trainer)
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


def validate_trainer(trainer: DictConfig) -> None:
    """The trainer keys users override most, checked before Lightning sees them; and an accelerator that
    this machine does not have."""
    check_int("trainer.max_steps", trainer.get("max_steps", -1), minimum=-1)
    check_int("trainer.max_epochs", trainer.get("max_epochs"), minimum=-1, allow_none=True)
    check_int("trainer.log_every_n_steps", trainer.get("log_every_n_steps", 50), minimum=0)
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator", f"{accelerator!r} but this machine has no usable GPU "
                              "(torch.cuda.is_available() is False): use trainer=cpu, or run where a GPU is "
                              "visible (check CUDA_VISIBLE_DEVICES and the driver)")
        devices = trainer.get("devices", 1)
        if isinstance(devices, int) and not isinstance(devices, bool) and devices > torch.cuda.device_count():
            raise ConfigError("trainer.devices", f"{devices} GPUs asked for, {torch.cuda.device_count()} "
                              "visible")
