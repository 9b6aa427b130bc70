"""In-training metrics: cheap FID/KID (or any metric) every N epochs or kimg, on a fixed real subset and
fixed latent seeds, logged as ``val/<metric>_<space>`` beside ``val/kimg``, and drawn against images seen
and against wall clock at the end of training (``metrics_curves.png`` in the run folder).

The feature networks live here, not in the LightningModule, so they never enter a checkpoint. The callback's
own history (values, kimg, wall clock) does go into checkpoints, so curves continue after a resume.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from difgan.metrics.evaluation import Evaluator


class MetricsCallback(L.Callback):
    def __init__(self, evaluator: Evaluator, n: int = 500, every_n_epochs: int | None = 1,
                 every_n_kimg: float | None = None, use_ema: bool = True, sample_options: dict | None = None,
                 plot: bool = True, max_overhead: float = 0.10, out_dir: str | Path | None = None):
        self.evaluator, self.n = evaluator, int(n)
        self.every_n_epochs, self.every_n_kimg = every_n_epochs, every_n_kimg
        self.use_ema, self.sample_options, self.plot = use_ema, dict(sample_options or {}), plot
        self.max_overhead, self.out_dir = max_overhead, out_dir
        self.history: list[dict] = []
        self._wall_base = 0.0        # training wall clock accumulated before this session (resume)
        self._t_start: float | None = None
        self._kimg_mark = 0
        self._since_last = 0.0       # wall clock at the end of the previous evaluation
        self._warned = False

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"history": self.history, "wall_s": self._wall()}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))
        self._wall_base = float(state.get("wall_s", 0.0))

    def _wall(self) -> float:
        return self._wall_base + (time.perf_counter() - self._t_start if self._t_start is not None else 0.0)

    # ----------------------------------------------------------------- hooks
    def on_fit_start(self, trainer, pl_module) -> None:
        # networks and reference statistics load (or train, once) before the clock starts
        self.evaluator.prepare(pl_module.device)

    def on_train_start(self, trainer, pl_module) -> None:
        self._t_start = time.perf_counter()
        self._since_last = self._wall()
        if self.every_n_kimg:
            self._kimg_mark = pl_module.images_seen // max(1, int(self.every_n_kimg * 1000))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_kimg:
            mark = pl_module.images_seen // max(1, int(self.every_n_kimg * 1000))
            if mark > self._kimg_mark:
                self._kimg_mark = mark
                self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.write_outputs(trainer)

    # ----------------------------------------------------------------- work
    def evaluate(self, trainer, pl_module) -> dict:
        t0 = time.perf_counter()
        result = self.evaluator.run(pl_module, self.n, self.use_ema, self.sample_options)
        spent = time.perf_counter() - t0
        kimg = pl_module.images_seen / 1000.0
        wall = self._wall()
        logged = {f"val/{k}": float(v) for k, v in result["metrics"].items()}
        logged.update({"val/kimg": kimg, "val/metrics_time_s": spent})
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=trainer.global_step)
        for k, v in logged.items():
            trainer.callback_metrics[k] = torch.tensor(v)
        self.history.append({"kimg": kimg, "wall_s": wall, "epoch": trainer.current_epoch,
                             "global_step": trainer.global_step, "metrics_time_s": spent,
                             **result["metrics"]})
        train_time = max(1e-9, wall - spent - self._since_last)
        if (not self._warned and len(self.history) > 1 and not trainer.should_stop
                and spent / train_time > self.max_overhead):
            self._warned = True
            rank_zero_warn(f"in-training metrics took {spent:.1f}s after {train_time:.1f}s of training "
                           f"({100 * spent / train_time:.0f}% > {100 * self.max_overhead:.0f}%): raise "
                           "metrics.during_training.every_n_epochs/every_n_kimg or lower its n")
        self._since_last = self._wall()
        self.last_protocol = result["protocol"]
        return result

    @rank_zero_only
    def write_outputs(self, trainer) -> None:
        if not self.history:
            return
        out = Path(self.out_dir or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        protocol = getattr(self, "last_protocol", {})
        (out / "metrics_history.json").write_text(json.dumps(
            {"history": self.history, "protocol": protocol}, indent=2, default=str))
        if self.plot:
            plot_history(self.history, out / "metrics_curves.png")


def plot_history(history: list[dict], path: Path) -> Path | None:
    """One row per metric: value against kimg (images seen) and against wall clock (minutes)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    skip = {"kimg", "wall_s", "epoch", "global_step", "metrics_time_s"}
    keys = [k for k in history[0] if k not in skip and not k.endswith("_std")]
    if not keys:
        return None
    fig, axes = plt.subplots(len(keys), 2, figsize=(9, 2.6 * len(keys)), squeeze=False)
    kimg = [h["kimg"] for h in history]
    wall = [h["wall_s"] / 60 for h in history]
    for row, key in enumerate(keys):
        ys = [h.get(key) for h in history]
        std = [h.get(f"{key}_std") for h in history]
        for col, xs in enumerate((kimg, wall)):
            ax = axes[row][col]
            if all(s is not None for s in std):
                ax.errorbar(xs, ys, yerr=std, marker="o", ms=3, capsize=2)
            else:
                ax.plot(xs, ys, marker="o", ms=3)
            ax.set_ylabel(key)
            ax.set_xlabel("kimg (images seen / 1000)" if col == 0 else "wall clock (min)")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
