"""``python -m difgan.run``: compose -> validate -> instantiate -> fit -> final evaluation.

One run writes one folder (Hydra's run dir): config.yaml (resolved), run.json (git commit, seed, command,
versions), checkpoints/last.ckpt, samples/*.png, logs/metrics.csv, wandb/ and metrics.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from difgan.build import build_datamodule, build_model
from difgan.callbacks.budget import KimgBudget
from difgan.callbacks.checkpoint import AtomicCheckpointIO, LastCheckpoint
from difgan.callbacks.resources import ResourceMonitor
from difgan.callbacks.samples import SampleGrid
from difgan.checkpoint import LAST, load_checkpoint
from difgan.cluster import check_slurm_layout, cluster_plugins
from difgan.confdir import CONF_DIR
from difgan.config import validate_run_config
from difgan.errors import ConfigError, run_reporting_errors
from difgan.loggers import build_loggers, finish_wandb, log_final_metrics, wandb_identity
from difgan.resume import resume_checkpoint
from difgan.runlock import RunLock, is_launch_rank_zero

# The EMA copy of the sampling network is kept in eval mode on purpose; Lightning warns about any such module.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)
# GANs step their optimizers by hand; a checkpoint written at the end of a batch holds the weights after that
# batch's steps, consistent with the counters, which is what resuming needs (Lightning warns at every save).
warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization",
                        category=UserWarning)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def parameter_counts(model) -> dict[str, int]:
    """Trainable parameters per network (top-level submodule) and in all; EMA copies are not trained."""
    counts = {name: sum(p.numel() for p in child.parameters() if p.requires_grad)
              for name, child in model.named_children()}
    counts = {k: v for k, v in counts.items() if v}
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


@rank_zero_only
def write_run_metadata(run_dir: Path, cfg: DictConfig, model=None) -> None:
    import lightning
    import torchvision

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    meta = {"git_commit": git_commit(), "seed": cfg.seed, "command": sys.argv,
            "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                         "lightning": lightning.__version__}}
    if model is not None:
        meta["parameters"] = parameter_counts(model)
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2))


def build_callbacks(cfg: DictConfig, run_dir: Path, datamodule) -> list[L.Callback]:
    cb = cfg.callbacks
    ckpt = cb.checkpoint
    callbacks: list[L.Callback] = [
        LastCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True,
                       save_top_k=-1 if ckpt.get("keep_periodic") else 0,
                       every_n_train_steps=ckpt.get("every_n_train_steps"),
                       every_n_epochs=(None if ckpt.get("every_n_train_steps")
                                       else ckpt.get("every_n_epochs", 1)),
                       filename="{epoch}-{step}"),
        SampleGrid(run_dir / "samples", cb.samples.every_n_batches, cb.samples.n, cb.samples.use_ema,
                   cfg.seed, cb.samples.get("trajectory_rows", 8), cb.samples.get("trajectory_frames", 11)),
    ]
    if cb.get("resources", {}).get("enabled", True):
        callbacks.append(ResourceMonitor())
    if cfg.max_kimg is not None:
        callbacks.append(KimgBudget(cfg.max_kimg))
    # Any further Lightning callbacks, by name: ++callbacks.extra.<name>._target_=pkg.Class (+ its arguments)
    for name, node in (cb.get("extra") or {}).items():
        try:
            callbacks.append(instantiate(node))
        except Exception as e:  # noqa: BLE001 - reported as a config error naming the key
            raise ConfigError(f"callbacks.extra.{name}", f"{type(e).__name__}: {e}") from None
    if cfg.get("metrics"):
        from difgan.metrics import callbacks_from_config

        callbacks += callbacks_from_config(cfg.metrics, datamodule, Path(cfg.paths.cache_dir))
    return callbacks


def train(cfg: DictConfig) -> dict | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # One writer per run folder (global rank 0 holds the lock; DDP's relaunched ranks share its folder).
    lock = RunLock(run_dir).acquire() if is_launch_rank_zero() else None
    try:
        return _train(cfg, run_dir)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: DictConfig, run_dir: Path) -> dict | None:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    model = build_model(cfg.model, datamodule.image_shape, datamodule.num_classes)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    ckpt_path = resume_checkpoint(cfg, run_dir, model, model.run_config)
    resume_step = (int(load_checkpoint(ckpt_path, mmap=True)["difgan"].get("batches_seen", 0))
                   if ckpt_path else 0)
    write_run_metadata(run_dir, cfg, model)

    hc = HydraConfig.get()
    sweep_dir = Path(str(hc.sweep.dir)) if hc.mode == RunMode.MULTIRUN else None
    loggers = build_loggers(cfg.logger, run_dir, run_name=f"{cfg.name}/{run_dir.name}",
                            config=model.run_config, identity=wandb_identity(cfg, sweep_dir),
                            resume_step=resume_step)
    callbacks = build_callbacks(cfg, run_dir, datamodule)
    overrides = {"max_epochs": -1} if cfg.max_kimg is not None else {}
    check_slurm_layout(cfg.trainer)
    # every checkpoint file: temp file in its folder, fsync, replace; plus SLURM's environment when there
    plugins = [AtomicCheckpointIO(), *cluster_plugins(cfg.trainer)]
    trainer: L.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir), logger=loggers or False,
                                     callbacks=callbacks, plugins=plugins, **overrides)
    results = None
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if cfg.get("metrics"):
            from difgan.metrics import final_evaluation

            results = final_evaluation(model, datamodule, cfg.metrics, run_dir, Path(cfg.paths.cache_dir))
            if trainer.is_global_zero:
                log_final_metrics(loggers, results)
    finally:
        finish_wandb()
    if trainer.is_global_zero:
        print_summary(run_dir, trainer, model, callbacks, results)
    return results


def _trained_in_other_processes(run_dir: Path, trainer, model) -> dict | None:
    """Under ``ddp_spawn`` the ranks trained in processes of their own: Lightning hands the weights back to
    this one, but not the counters; they are read from the checkpoint rank 0 wrote (None otherwise)."""
    from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

    if not isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher):
        return None
    if model.batches_seen or not (run_dir / LAST).is_file():
        return None
    ckpt = load_checkpoint(run_dir / LAST, mmap=True)
    model.images_seen = int(ckpt["difgan"]["images_seen"])
    model.batches_seen = int(ckpt["difgan"]["batches_seen"])
    return {"global_step": int(ckpt["global_step"])}


def print_summary(run_dir: Path, trainer, model, callbacks, results) -> None:
    spawned = _trained_in_other_processes(run_dir, trainer, model)
    global_step = spawned["global_step"] if spawned else trainer.global_step
    samples = next((c.last_path for c in callbacks if isinstance(c, SampleGrid)), None)
    if samples is None and (run_dir / "samples" / "final.png").is_file():
        samples = run_dir / "samples" / "final.png"
    lines = [f"done: {model.images_seen} images seen, {model.batches_seen} batches, "
             f"global_step {global_step}",
             f"run folder : {run_dir}",
             f"checkpoint : {run_dir / LAST}",
             f"samples    : {samples}"]
    csv = run_dir / "logs" / "metrics.csv"
    if csv.is_file():  # logger=none writes none
        lines.append(f"CSV logs   : {csv}")
    wandb_dir = run_dir / "wandb"
    if wandb_dir.is_dir():
        offline = sorted(wandb_dir.glob("offline-run-*"))
        lines.append(f"W&B        : {offline[-1]} (upload: wandb sync {offline[-1]})" if offline
                     else f"W&B        : {wandb_dir}")
    if results:
        lines.append(f"metrics    : {run_dir / 'metrics.json'}")
    print("\n".join(lines))


def train_features(cfg: DictConfig) -> None:
    from difgan.metrics import run_task_train_features

    return run_task_train_features(cfg)


def train_discriminator(cfg: DictConfig):
    from difgan.discriminator_task import train_discriminator as task

    return task(cfg)


# The one table of ``task=...`` values (validated against it before any work).
TASKS = {"train": train, "train_features": train_features, "train_discriminator": train_discriminator}


def run(cfg: DictConfig):
    hc = HydraConfig.get()
    validate_run_config(cfg, TASKS, multirun=hc.mode == RunMode.MULTIRUN,
                        launcher=str(hc.launcher.get("_target_", "")) if hc.get("launcher") else None)
    return TASKS[cfg.task](cfg)


def objective(cfg: DictConfig, results: dict | None) -> float:
    """The number a hyperparameter search minimises or maximises (``optimized_metric``, e.g. fid_domain):
    one of the run's final metrics (metrics.json)."""
    key = cfg.optimized_metric
    values = (results or {}).get("metrics", {})
    if key not in values:
        raise ConfigError("optimized_metric", f"{key!r} is not among this run's final metrics "
                          f"({', '.join(sorted(values)) or 'none: enable metrics.final'})")
    return float(values[key])


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="run")
def hydra_entry(cfg: DictConfig):
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        # A sweep job raises, so the sweep callback (difgan.sweep) records its error and the sweep goes on.
        results = run(cfg)
        return objective(cfg, results) if cfg.get("optimized_metric") else results
    return run_reporting_errors(run, cfg)


def main() -> None:
    """``python -m difgan.run``: one run, or a sweep with ``-m`` (exit status 1 if any job failed)."""
    from difgan import sweep

    sweep.LAST_SUMMARY = None
    hydra_entry()
    failed = sweep.sweep_failed()
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
