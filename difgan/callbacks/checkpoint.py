"""``checkpoints/last.ckpt`` kept current: Lightning's ModelCheckpoint with two gaps closed.

With ``save_top_k=0`` (no periodic files kept) Lightning refreshes ``last.ckpt`` at an epoch end only after a
top-k save, i.e. never, so a killed run lost every finished epoch; and at the end of training it writes
``last.ckpt`` only if no ``last.ckpt`` was written before, so a run that stops between two save points
(``max_steps``, ``max_kimg``) kept an older state. Here ``last.ckpt`` is written at every save point and at
the end of training. A run stopped by an exception writes nothing more (its last good checkpoint stays).
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if (self.save_last and self.save_top_k == 0 and self._every_n_epochs >= 1
                and (trainer.current_epoch + 1) % self._every_n_epochs == 0
                and self._should_save_on_train_epoch_end(trainer)
                and not self._should_skip_saving_checkpoint(trainer)):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
