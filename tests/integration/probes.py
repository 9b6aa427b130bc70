"""Test callbacks added to real runs with
``++callbacks.extra.<name>._target_=tests.integration.probes.<Class>`` (the repository must be on
``PYTHONPATH``: ``runner.cli_env`` puts it there)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


def _state(trainer, pl_module) -> dict:
    """Everything a resumed or replicated run must agree on, as plain tensors and ints (weights_only)."""
    return {"state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
            "parameters": sorted(name for name, _ in pl_module.named_parameters()),
            "optimizer_states": [opt.state_dict() for opt in trainer.optimizers],
            "rank": trainer.global_rank, "world_size": trainer.world_size, "global_step": trainer.global_step,
            "batches_seen": pl_module.batches_seen, "images_seen": pl_module.images_seen}


class RankState(L.Callback):
    """Every rank writes ``<out_dir>/rank<r>.pt`` at the end of training: its module's ``state_dict``, the
    names of its parameters, optimizer states, counters, the sum of every real batch it trained on (did the
    ranks see different data?) and the torch RNG state at each batch start (do they draw different noise?)."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.batch_sums: list[float] = []

        self.rng_states: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_sums.append(float(batch[0].double().sum()))
        self.rng_states.append(torch.get_rng_state())

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {**_state(trainer, pl_module), "batch_sums": self.batch_sums, "rng_states": self.rng_states}
        torch.save(state, self.out_dir / f"rank{trainer.global_rank}.pt")


class StateAtStart(L.Callback):
    """Writes ``path`` when training starts (after any checkpoint was restored): what the run resumes from."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_start(self, trainer, pl_module) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(_state(trainer, pl_module), self.path)


class PoisonWeights(L.Callback):
    """Sets one discriminator weight to NaN (or inf) just before training batch ``at_batch`` (1-based), so the
    discriminator loss of that batch is non-finite: a deterministic stand-in for a diverging run."""

    def __init__(self, at_batch: int, value: str = "nan"):
        self.at_batch, self.value = int(at_batch), float(value)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Callbacks run before the module's own hook, which counts the batch: this is batch batches_seen + 1.
        if pl_module.batches_seen + 1 == self.at_batch:
            with torch.no_grad():
                next(pl_module.discriminator.parameters()).view(-1)[0] = self.value


class SlowDown(L.Callback):
    """Sleeps after every batch, so a test can interrupt a run between checkpoints."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import time

        time.sleep(self.seconds)


class PreemptOnce(L.Callback):
    """For the job whose ``tag`` (e.g. ``${model.name}-${seed}``) equals ``target``: sends this process the
    signal SLURM sends before a time limit or a preemption (submitit's USR2) after batch ``at_batch`` of a
    fresh start, so submitit checkpoints the job and requeues it. Every start appends the batch it started
    from to ``<run folder>/starts.txt``."""

    def __init__(self, at_batch: int, tag: str, target: str):
        self.at_batch, self.armed = int(at_batch), str(tag) == str(target)
        self.started_at = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.started_at = pl_module.batches_seen
        with open(Path(trainer.default_root_dir) / "starts.txt", "a") as f:
            f.write(f"{self.started_at}\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.armed and self.started_at == 0 and pl_module.batches_seen == self.at_batch:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGUSR2)


class FailAt(L.Callback):
    """For the job whose ``tag`` equals ``target``: raises at batch ``at_batch`` (a crash mid-training)."""

    def __init__(self, at_batch: int, tag: str, target: str):
        self.at_batch, self.armed = int(at_batch), str(tag) == str(target)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.armed and pl_module.batches_seen == self.at_batch:
            raise RuntimeError(f"deliberate failure at batch {self.at_batch}")
