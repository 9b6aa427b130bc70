"""Stop training after a budget of images seen (kimg): a unit that does not change with batch size, GPU
count, or how many optimizer steps a model makes per batch."""

from __future__ import annotations

import lightning as L


class KimgBudget(L.Callback):
    def __init__(self, max_kimg: float):
        self.max_images = int(max_kimg * 1000)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.images_seen >= self.max_images:
            trainer.should_stop = True

