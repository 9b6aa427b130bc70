"""Sample grids during training: PNG files in the run folder, images in W&B."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image


def grid_labels(n: int, num_classes: int) -> torch.Tensor | None:
    """Labels for a conditional grid: each row one class (row r shows class r mod num_classes)."""
    if num_classes < 1:
        return None
    per_row = max(1, int(math.sqrt(n)))
    return (torch.arange(n) // per_row) % num_classes


def save_grid(images: torch.Tensor, path: Path) -> Path:
    """Save images in [-1, 1] as one PNG grid with square-ish rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float().cpu(), path, nrow=max(1, int(math.sqrt(images.shape[0]))),
               normalize=True, value_range=(-1, 1), padding=2)
    return path


def trajectory_strip(xs: list[torch.Tensor], max_frames: int) -> tuple[torch.Tensor, int]:
    """((rows * frames, C, H, W), frames): each sample's states left to right, at most ``max_frames`` of
    them evenly picked (the first and the last always), for one grid with a row per sample."""
    picks = sorted({round(i * (len(xs) - 1) / max(max_frames - 1, 1)) for i in range(max_frames)})
    frames = torch.stack([xs[i] for i in picks], dim=1)  # (rows, frames, C, H, W)
    return frames.flatten(0, 1), len(picks)


class SampleGrid(L.Callback):
    """Every ``every_n_batches`` training batches (and at the end), sample ``n`` images from fixed noise
    and fixed labels, so grids from different times show the same latent points. At the end, models with a
    trajectory (``has_trajectory``) also get ``trajectory.png``: ``trajectory_rows`` samples, a row each,
    their intermediate states left to right (seed 003, figure 6)."""

    def __init__(self, out_dir: str | Path, every_n_batches: int = 500, n: int = 64, use_ema: bool = True,
                 seed: int = 0, trajectory_rows: int = 8, trajectory_frames: int = 11):
        self.out_dir, self.every, self.n = Path(out_dir), every_n_batches, n
        self.use_ema, self.seed = use_ema, seed
        self.trajectory_rows, self.trajectory_frames = int(trajectory_rows), int(trajectory_frames)
        self.last_path: Path | None = None

    def _fixed_inputs(self, pl_module):
        g = torch.Generator().manual_seed(self.seed)
        noise = torch.randn((self.n, *pl_module.noise_shape), generator=g)
        labels = grid_labels(self.n, pl_module.num_classes)
        return noise.to(pl_module.device), None if labels is None else labels.to(pl_module.device)

    @rank_zero_only
    def write(self, trainer: L.Trainer, pl_module, tag: str) -> Path:
        noise, labels = self._fixed_inputs(pl_module)
        g = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        images = pl_module.sample(self.n, labels, use_ema=self.use_ema, noise=noise, generator=g)
        path = save_grid(images, self.out_dir / f"{tag}.png")
        save_grid(images, self.out_dir / "latest.png")
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                grid = make_grid(images.float().cpu(), nrow=max(1, int(math.sqrt(self.n))), normalize=True,
                                 value_range=(-1, 1))
                logger.log_image("samples/grid", [grid], caption=[f"{pl_module.images_seen} images seen"])
        return path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every and pl_module.batches_seen % self.every == 0:
            self.write(trainer, pl_module, f"batch_{pl_module.batches_seen:07d}")

    @rank_zero_only
    def write_trajectory(self, pl_module) -> Path | None:
        rows = min(self.trajectory_rows, self.n)
        if not pl_module.has_trajectory or rows < 1 or self.trajectory_frames < 2:
            return None
        noise, labels = self._fixed_inputs(pl_module)
        g = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        _, trajectory = pl_module.sample_trajectory(rows, None if labels is None else labels[:rows],
                                                    use_ema=self.use_ema, noise=noise[:rows], generator=g)
        images, frames = trajectory_strip([x.clamp(-1, 1) for x in trajectory.xs], self.trajectory_frames)
        path = self.out_dir / "trajectory.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(images.float().cpu(), path, nrow=frames, normalize=True, value_range=(-1, 1), padding=2)
        return path

    def on_train_end(self, trainer, pl_module) -> None:
        self.write(trainer, pl_module, "final")
        self.write_trajectory(pl_module)
