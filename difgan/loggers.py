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


def wandb_identity(cfg: DictConfig, sweep_dir: Path | None = None) -> dict:
    """Where a run sits in W&B: ``group`` = ``logger.wandb.group``, else the sweep (its folder's name) for a
    job of a multirun, else the run's ``name`` (the experiment); ``job_type`` = the model; ``tags`` = model,
    data and seed plus ``tags`` and ``logger.wandb.tags``."""
    wb = cfg.logger.get("wandb") or {}
    group = wb.get("group") or (sweep_dir.name if sweep_dir is not None else None) or cfg.name
    model, data = cfg.model.get("name", "model"), cfg.data.get("name", "data")
    tags = [f"model:{model}", f"data:{data}", f"seed:{cfg.seed}", *(cfg.get("tags") or []),
            *(wb.get("tags") or [])]
    return {"group": str(group), "job_type": str(model), "tags": list(dict.fromkeys(str(t) for t in tags))}


#: W&B x axes: training curves against images seen (``train/kimg``), in-training metrics against the kimg
#: they were computed at, resources against wall clock as well (W&B also offers step and relative time).
WANDB_AXES = {"train/*": "train/kimg", "val/*": "val/kimg", "resources/*": "resources/wall_clock_s"}


def define_wandb_axes(logger: WandbLogger) -> None:
    run = logger.experiment
    for axis in set(WANDB_AXES.values()):
        run.define_metric(axis)
    for pattern, axis in WANDB_AXES.items():
        run.define_metric(pattern, step_metric=axis)


def log_final_metrics(loggers: list[Logger], result: dict | None) -> None:
    """The final metrics (metrics.json) as a ``wandb.Table`` (one row a metric, with its protocol) and in the
    run summary as ``final/<metric>``."""
    if not result:
        return
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        p = result.get("protocol", {})
        ref = p.get("reference", {})
        columns = ["metric", "value", "feature_spaces", "n_generated", "n_real", "reference", "weights",
                   "images_seen"]
        rows = [[k, float(v), ",".join(p.get("metric_spaces", [])), p.get("n_generated"), p.get("n_real"),
                 f"{ref.get('dataset')}/{ref.get('split')}", p.get("weights"), p.get("images_seen")]
                for k, v in result.get("metrics", {}).items()]
        run = logger.experiment
        run.log({"final/metrics": wandb.Table(columns=columns, data=rows)})
        for k, v in result.get("metrics", {}).items():
            run.summary[f"final/{k}"] = float(v)


def build_loggers(cfg: DictConfig, run_dir: Path, run_name: str, config: dict,
                  identity: dict | None = None) -> list[Logger]:
    loggers: list[Logger] = []
    if cfg.get("csv", True):
        loggers.append(CSVLogger(save_dir=str(run_dir), name="logs", version=""))
    wb = cfg.get("wandb") or {}
    if wb.get("enabled", False):
        mode = wandb_mode(wb.get("mode", "auto"))
        if mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            log_model = bool(wb.get("log_model", False)) and mode == "online"  # offline + log_model raises
            ident = identity or {"tags": list(wb.get("tags") or []) or None}
            logger = WandbLogger(project=wb.get("project", "difgan"), entity=wb.get("entity"),
                                 name=run_name, save_dir=str(run_dir), mode=mode, log_model=log_model,
                                 config=config, **ident)
            loggers.append(logger)
            if identity is not None:
                define_wandb_axes(logger)
    return loggers


def finish_wandb() -> None:
    """End the W&B run, so the next job of a multirun starts its own (PITFALLS: W&B). A process that never
    imported wandb has no run (and is spared the second of importing it)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
