"""Lightning loggers from the ``logger`` config: CSV always; W&B online with credentials, else offline.

Never an interactive prompt: without credentials W&B runs offline and we print how to sync; asking for
``logger.wandb.mode=online`` without credentials also runs offline, with a one-line warning saying how to log
in (a queued cluster job should not die at its start for a missing login).

Logs are never deleted. A run folder reused by a resumed run keeps ``logs/metrics.csv`` and appends to it
(Lightning's CSVLogger deletes it). Rows the killed part logged after the checkpoint the run resumes from
(steps the resumed part trains again) are moved to ``logs/metrics-superseded-<time>.csv``, so
``metrics.csv`` is one history with every step once; ``read_metrics`` reads it. W&B continues the same run id
(stored in ``wandb/difgan-run-id``).
"""

from __future__ import annotations

import csv
import netrc
import os
import sys
import time
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
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
    env = "offline" if env == "dryrun" else env if env in ("online", "offline", "disabled") else None
    if env in ("offline", "disabled"):
        return env
    mode = env or requested
    if mode == "auto":
        return "online" if wandb_credentials_present() else "offline"
    if mode == "online" and not wandb_credentials_present():
        print("warning: logger.wandb.mode=online but no W&B credentials (WANDB_API_KEY or ~/.netrc): running "
              "offline. Log in with `wandb login` (or set WANDB_API_KEY), and upload this run later with "
              "`wandb sync <run folder>/wandb/offline-run-*`", file=sys.stderr)
        return "offline"
    return mode


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


METRICS_CSV = Path("logs") / "metrics.csv"
WANDB_ID_FILE = Path("wandb") / "difgan-run-id"


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _write_csv(path: Path, fieldnames: list[str], rows: list[dict]) -> None:
    """Replace ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued, never deleted; a header change
    rewrites the file atomically with every earlier row."""

    def _check_log_dir_exists(self) -> None:  # Lightning deletes metrics.csv here
        if os.path.isfile(self.metrics_file_path):
            self.metrics_keys = _read_csv(Path(self.metrics_file_path))[0]

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        _write_csv(Path(self.metrics_file_path), fieldnames, _read_csv(Path(self.metrics_file_path))[1])


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``<save_dir>/<name>/metrics.csv`` with ``AppendingWriter``."""

    @property
    def experiment(self) -> AppendingWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def set_aside_rows_after(run_dir: Path, step: int) -> Path | None:
    """Move the rows of ``metrics.csv`` with ``step >= step`` (logged by a killed part after the checkpoint a
    resumed run continues from: it trains those steps again) to ``metrics-superseded-<time>.csv``."""
    path = Path(run_dir) / METRICS_CSV
    if not path.is_file():
        return None
    fieldnames, rows = _read_csv(path)
    is_later = [r.get("step") not in (None, "") and int(float(r["step"])) >= step for r in rows]
    later = [r for r, x in zip(rows, is_later) if x]
    if not later:
        return None
    aside = path.with_name(f"metrics-superseded-{time.strftime('%Y%m%d-%H%M%S')}.csv")
    _write_csv(aside, fieldnames, later)
    _write_csv(path, fieldnames, [r for r, x in zip(rows, is_later) if not x])
    print(f"resumed at step {step}: {len(later)} metric rows the interrupted run logged after its checkpoint "
          f"were moved to {aside}")
    return aside


def read_metrics(run_dir: str | Path) -> list[dict]:
    """A run's metric history (``logs/metrics.csv``, every part of a resumed run) as rows of floats."""
    _, rows = _read_csv(Path(run_dir) / METRICS_CSV)
    return [{k: float(v) for k, v in r.items() if v not in (None, "")} for r in rows]


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of this run folder: created once, then reused by every resumed part."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    import secrets

    run_id = secrets.token_hex(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def build_loggers(cfg: DictConfig, run_dir: Path, run_name: str, config: dict,
                  identity: dict | None = None, resume_step: int | None = None) -> list[Logger]:
    """The run's loggers. ``resume_step``: the batch count of the checkpoint the run continues from, 0 for a
    fresh start (rows an interrupted run logged from there on are set aside, see ``set_aside_rows_after``)."""
    loggers: list[Logger] = []
    if cfg.get("csv", True):
        set_aside_rows_after(run_dir, resume_step or 0)
        loggers.append(AppendingCSVLogger(save_dir=str(run_dir), name="logs", version=""))
    wb = cfg.get("wandb") or {}
    if wb.get("enabled", False):
        mode = wandb_mode(wb.get("mode", "auto"))
        if mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            log_model = bool(wb.get("log_model", False)) and mode == "online"  # offline + log_model raises
            ident = identity or {"tags": list(wb.get("tags") or []) or None}
            logger = WandbLogger(project=wb.get("project", "difgan"), entity=wb.get("entity"),
                                 name=run_name, save_dir=str(run_dir), mode=mode, log_model=log_model,
                                 id=wandb_run_id(run_dir), resume="allow", config=config, **ident)
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
