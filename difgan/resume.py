"""Which checkpoint a run continues from: ``ckpt_path`` (explicit), or the run folder's own ``last.ckpt``
(a requeued cluster job), the latter only when it was trained with the same settings (``resume``).

``resume=auto`` (default) continues a run folder's checkpoint when the stored model, data and optimisation
settings equal this run's (budgets, logging, callbacks, metrics, paths and loader workers may change:
extending a run is normal) and stops with one line naming the differing keys otherwise; ``force``
continues regardless (the weights must still fit); ``never`` starts afresh and moves the old checkpoints
aside (``checkpoints_previous_<time>/``), so nothing is lost.

When the run folder's ``last.ckpt`` is unreadable (a file a kill or a full disk left behind before saves were
atomic, or any corruption since), the newest readable checkpoint in ``checkpoints/`` is used instead, with a
one-line warning; when none is readable the run stops with one line saying what to do.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from difgan.checkpoint import LAST, check_compatible, load_checkpoint, resolve_checkpoint
from difgan.errors import CheckpointError, ConfigError

RESUME_MODES = ("auto", "never", "force")
# Settings that may differ between a run and the run it continues.
MAY_CHANGE = (
    "max_kimg", "ckpt_path", "resume", "name", "tags", "study", "optimized_metric", "task", "logger",
    "callbacks", "metrics", "paths",
    "trainer.max_steps", "trainer.max_epochs", "trainer.max_time", "trainer.log_every_n_steps",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.val_check_interval",
    "trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.num_sanity_val_steps",
    "data.num_workers", "data.root", "data.download", "data.pin_memory", "data.persistent_workers",
    "model.pretrained", "model.pretrained_networks", "model.pretrained_use_ema",
    "discriminator.epochs",  # task=train_discriminator: its budget
)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _may_change(key: str) -> bool:
    return any(key == m or key.startswith(m + ".") for m in MAY_CHANGE)


def differing_settings(stored: dict, current: dict) -> list[str]:
    """Keys (dotted) whose values differ between two resolved run configs, ignoring ``MAY_CHANGE``."""
    # The discriminator node configures task=train_discriminator only; other tasks never read it.
    unused = () if current.get("task") == "train_discriminator" else ("discriminator",)
    keep = lambda k: not _may_change(k) and k.split(".")[0] not in unused  # noqa: E731
    a = {k: v for k, v in _flatten(stored).items() if keep(k)}
    b = {k: v for k, v in _flatten(current).items() if keep(k)}
    same = lambda x, y: x == y or (isinstance(x, int | float) and isinstance(y, int | float)  # noqa: E731
                                   and not isinstance(x, bool) and float(x) == float(y))
    return sorted(k for k in a.keys() | b.keys() if not same(a.get(k, "<unset>"), b.get(k, "<unset>")))


def resume_checkpoint(cfg, run_dir: Path, model, current: dict) -> str | None:
    """The checkpoint this run continues from (checked to fit ``model``), or None to start afresh."""
    mode = cfg.get("resume", "auto")
    if mode not in RESUME_MODES:
        raise ConfigError("resume", f"unknown mode {mode!r}; valid: {', '.join(RESUME_MODES)}")
    if cfg.ckpt_path is not None:
        path = resolve_checkpoint(cfg.ckpt_path)
        check_compatible(load_checkpoint(path, mmap=True), model, path)
        return str(path)
    path = run_dir / LAST
    folder = path.parent
    if not path.is_file() and not (folder.is_dir() and any(folder.glob("*.ckpt"))):
        return None
    if mode == "never":
        stamp = time.strftime('%Y%m%d-%H%M%S') + f"_{time.time_ns() // 1000 % 1_000_000:06d}"
        aside = run_dir / f"checkpoints_previous_{stamp}"
        (run_dir / "checkpoints").rename(aside)
        run_id = run_dir / "wandb" / "difgan-run-id"  # a fresh run is a new W&B run
        if run_id.is_file():
            run_id.rename(run_id.with_name(f"{run_id.name}.previous_{time.strftime('%Y%m%d-%H%M%S')}"))
        print(f"resume=never: starting afresh; the earlier checkpoints were moved to {aside}")
        return None
    path, ckpt = newest_readable(run_dir)
    if mode == "auto":
        diff = differing_settings(ckpt["difgan"].get("config") or {}, current)
        if diff:
            stored, now = _flatten(ckpt["difgan"].get("config") or {}), _flatten(current)
            shown = ", ".join(f"{k} ({stored.get(k, '<unset>')!r} -> {now.get(k, '<unset>')!r})"
                              for k in diff[:5])
            more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
            raise ConfigError("resume", f"run folder {run_dir} holds a checkpoint trained with other "
                              f"settings: {shown}{more}. Use resume=force to continue it anyway, "
                              "resume=never to start afresh there (old checkpoints are kept aside), "
                              "or another hydra.run.dir")
    check_compatible(ckpt, model, path)
    return str(path)


def newest_readable(run_dir: Path) -> tuple[Path, dict]:
    """The run folder's ``last.ckpt`` if it loads, else its newest readable ``*.ckpt`` (one-line warning)."""
    last = run_dir / LAST
    reason = "missing"
    if last.is_file():
        try:
            return last, load_checkpoint(last, mmap=True)
        except CheckpointError as e:
            reason = str(e).split(": ", 1)[-1] if str(e) else "unreadable"
    others = sorted((p for p in last.parent.glob("*.ckpt") if p != last and p.is_file()),
                    key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for other in others:
        try:
            ckpt = load_checkpoint(other, mmap=True)
        except CheckpointError:
            continue
        state = "is unreadable" if reason != "missing" else "is missing"
        print(f"warning: {last} {state} ({reason[:160]}); resuming from the newest readable checkpoint "
              f"{other}", file=sys.stderr)
        return other, ckpt
    raise CheckpointError(f"no readable checkpoint in {last.parent}: {last.name} is {reason[:160]} and "
                          f"none of {len(others)} other checkpoint(s) loads. Use resume=never to start "
                          "afresh there (the old checkpoints are moved aside), or another hydra.run.dir")
