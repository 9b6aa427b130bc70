"""Lightning loggers from the ``logger`` config: CSV always; W&B online with credentials, else offline.

Never an interactive prompt: without credentials W&B runs offline and we print how to sync.
"""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig

from difgan.errors import ConfigError

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(requested: str) -> str:
    """The mode W&B will run in: ``WANDB_MODE`` in the environment wins, then the config."""
    if requested not in WANDB_MODES:
        raise ConfigError("logger.wandb.mode", f"unknown mode {requested!r}; valid: {', '.join(WANDB_MODES)}")
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    if requested == "auto":
        return "online" if wandb_credentials_present() else "offline"
    return requested


def build_loggers(cfg: DictConfig, run_dir: Path, run_name: str, config: dict) -> list[Logger]:
    loggers: list[Logger] = []
    if cfg.get("csv", True):
        loggers.append(CSVLogger(save_dir=str(run_dir), name="logs", version=""))
    wb = cfg.get("wandb") or {}
    if wb.get("enabled", False):
        mode = wandb_mode(wb.get("mode", "auto"))
        if mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            log_model = bool(wb.get("log_model", False)) and mode == "online"  # offline + log_model raises
            loggers.append(WandbLogger(project=wb.get("project", "difgan"), entity=wb.get("entity"),
                                       name=run_name, save_dir=str(run_dir), mode=mode, log_model=log_model,
                                       config=config, tags=list(wb.get("tags") or []) or None))
    return loggers


def finish_wandb() -> None:
    """End the W&B run, so the next job of a multirun starts its own (PITFALLS: W&B). A process that never
    imported wandb has no run (and is spared the second of importing it)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
