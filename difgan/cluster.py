"""Running on SLURM: who requeues a preempted or timed-out job.

Exactly one owner: **submitit** (the ``hydra/launcher=slurm`` launcher). Its signal handler (USR2,
``signal_delay_s`` before the time limit or on preemption) resubmits the job with the same arguments, up to
``max_num_timeout`` times; the requeued job runs in the same run folder and ``difgan.resume`` continues from
its ``checkpoints/last.ckpt``. Lightning's own SLURM auto-requeue (on SIGUSR1, ``scontrol requeue``) is
switched off here, so the two never both requeue one job. Lightning still detects SLURM for the process
layout (ranks from ``SLURM_PROCID``, nodes from the allocation: ``trainer.num_nodes`` x ``trainer.devices``
must equal the job's tasks).
"""

from __future__ import annotations

from lightning.pytorch.plugins.environments import SLURMEnvironment


def cluster_plugins(trainer_cfg) -> list:
    """Trainer plugins for the cluster this process runs on: under SLURM, its environment without Lightning's
    auto-requeue (submitit owns requeueing). Nothing elsewhere, or when the trainer config sets plugins."""
    if trainer_cfg.get("plugins"):
        return []
    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []
