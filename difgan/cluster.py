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

import os

from lightning.pytorch.plugins.environments import SLURMEnvironment

from difgan.errors import ConfigError


def cluster_plugins(trainer_cfg) -> list:
    """Trainer plugins for the cluster this process runs on: under SLURM, its environment without Lightning's
    auto-requeue (submitit owns requeueing). Nothing elsewhere, or when the trainer config sets plugins."""
    if trainer_cfg.get("plugins"):
        return []
    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def check_slurm_layout(trainer_cfg) -> None:
    """Under SLURM, the trainer's process layout must be the allocation's: ``trainer.num_nodes`` = the job's
    nodes and ``trainer.devices`` = its tasks per node (one process per GPU, started by srun). A mismatch
    would hang at the first collective or train on part of the allocation; stop before any work."""
    if not SLURMEnvironment.detect():
        return
    nodes, per_node = os.environ.get("SLURM_NNODES"), os.environ.get("SLURM_NTASKS_PER_NODE")
    if nodes and nodes.isdigit() and int(trainer_cfg.get("num_nodes", 1)) != int(nodes):
        raise ConfigError("trainer.num_nodes", f"is {trainer_cfg.get('num_nodes', 1)} but the SLURM job has "
                          f"{nodes} nodes: set trainer.num_nodes={nodes} (= hydra.launcher.nodes)")
    devices = trainer_cfg.get("devices", 1)
    if per_node and per_node.isdigit() and isinstance(devices, int) and devices != int(per_node):
        raise ConfigError("trainer.devices", f"is {devices} but the SLURM job runs {per_node} tasks per "
                          "node: set trainer.devices = hydra.launcher.tasks_per_node = gpus_per_node")
