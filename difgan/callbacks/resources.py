"""Wall clock, images seen, throughput and peak memory (CPU RSS, CUDA when present), as seed 001 tracked."""

from __future__ import annotations

import resource
import sys
import time

import lightning as L
import torch


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class ResourceMonitor(L.Callback):
    def __init__(self, log_every_n_batches: int = 50):
        self.every = log_every_n_batches
        self.start: float | None = None
        self.summary: dict[str, float] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()
        self._images_at_start = pl_module.images_seen
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def _measure(self, pl_module) -> dict[str, float]:
        elapsed = time.perf_counter() - (self.start or time.perf_counter())
        stats = {
            "resources/wall_clock_s": elapsed,
            "resources/images_seen": float(pl_module.images_seen),
            "resources/images_per_s": (pl_module.images_seen - self._images_at_start) / max(elapsed, 1e-9),
            "resources/peak_rss_mb": peak_rss_mb(),
        }
        if pl_module.device.type == "cuda":
            stats["resources/cuda_peak_mb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        return stats

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every and pl_module.batches_seen % self.every == 0:
            pl_module.log_dict(self._measure(pl_module), on_step=True, on_epoch=False, rank_zero_only=True)

    def on_train_end(self, trainer, pl_module) -> None:
        self.summary = self._measure(pl_module)
        for logger in trainer.loggers:
            logger.log_metrics(self.summary, step=trainer.global_step)
