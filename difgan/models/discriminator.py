"""A time-conditioned discriminator D(x_t, t[, y]) as a LightningModule (``task=train_discriminator``).

Trained on batches of (image in [-1, 1], is_real, label): each image is diffused to a t drawn uniformly or by
Kim et al.'s importance sampling (``t_sampling``), x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with the
diffusion model's own schedule, and D learns BCE(real = 1, generated = 0). The held-out split is scored at
the end of every epoch on fixed noise and uniformly spread t (so every bucket is populated): ``val/acc``,
``val/bce``, ``val/ece`` overall and ``val/acc_t<i>``, ``val/bce_t<i>``, ``val/ece_t<i>`` per t bucket
(``bucket_metrics``). The latest table travels in the checkpoint (``checkpoint["difgan"]["heldout"]``), which
``difgan.evaluate`` prints for a discriminator checkpoint.

Checkpoints are normal suite checkpoints (``weights_only=True``): ``state_dict`` plus
``checkpoint["difgan"]`` with the run config, ``kind: "discriminator"`` and the constructor arguments
(``spec``), so ``load_discriminator(path)`` rebuilds it anywhere.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difgan.diffusion import NoiseSchedule, q_sample
from difgan.diffusion.discriminator_guidance import (
    T_SAMPLING,
    bucket_metrics,
    sample_from,
    timestep_probabilities,
)
from difgan.errors import CheckpointError, ConfigError
from difgan.nets.time_discriminator import TimeConvDiscriminator, UNetEncoderDiscriminator
from difgan.validation import check_choice, check_int, require

BACKBONES = ("conv", "unet_encoder")
KIND = "discriminator"


class TimeDiscriminatorModule(L.LightningModule):
    def __init__(self, image_shape, num_classes: int = 0, schedule: dict | None = None,
                 backbone: str = "conv", base_channels: int = 32, depth: int = 3, head_channels: int = 64,
                 unet: dict | None = None, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 1e-7, t_sampling: str = "uniform", buckets: int = 5,
                 ece_bins: int = 10):
        super().__init__()
        check_choice("discriminator.backbone", backbone, BACKBONES)
        check_choice("discriminator.t_sampling", t_sampling, T_SAMPLING)
        check_int("discriminator.base_channels", base_channels)
        check_int("discriminator.depth", depth)
        check_int("discriminator.head_channels", head_channels)
        check_int("discriminator.buckets", buckets)
        check_int("discriminator.ece_bins", ece_bins)
        require("discriminator.lr", lr, lr > 0)
        require("discriminator.weight_decay", weight_decay, weight_decay >= 0)
        self.spec: dict[str, Any] = {
            "image_shape": [int(s) for s in image_shape], "num_classes": int(num_classes or 0),
            "schedule": dict(schedule or {}), "backbone": backbone, "base_channels": base_channels,
            "depth": depth, "head_channels": head_channels, "unet": dict(unet) if unet else None,
            "lr": float(lr), "betas": [float(b) for b in betas], "weight_decay": float(weight_decay),
            "t_sampling": t_sampling, "buckets": buckets, "ece_bins": ece_bins}
        self.image_shape, self.num_classes = tuple(self.spec["image_shape"]), self.spec["num_classes"]
        self.schedule = NoiseSchedule.from_config(**self.spec["schedule"])
        channels, resolution, _ = self.image_shape
        if backbone == "conv":
            try:
                self.net: nn.Module = TimeConvDiscriminator(
                    channels, resolution, base_channels, depth, self.num_classes, True,
                    self.schedule.num_timesteps)
            except ValueError as e:
                raise ConfigError("discriminator.depth", str(e)) from None
        else:
            if not unet:
                raise ConfigError("discriminator.backbone", "unet_encoder needs the diffusion model's UNet")
            from difgan.nets.unet import UNet

            self.net = UNetEncoderDiscriminator(UNet(**unet), head_channels, self.num_classes)
        self.register_buffer("t_probs", timestep_probabilities(self.schedule, t_sampling).float(),
                             persistent=False)
        self.heldout: list[dict] | None = None
        self.run_config: dict | None = None
        self._val: list[tuple[Tensor, Tensor, Tensor]] = []

    # ----------------------------------------------------------------- the discriminator
    def forward(self, x_t: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits log(D / (1 - D)) of (x_t, t); ``labels`` are used by class-conditional discriminators."""
        return self.net(x_t, t, labels if self.num_classes else None)

    def diffuse(self, x0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device if generator is None
                            else generator.device).to(x0.device)
        return q_sample(self.schedule, x0, t, noise)

    # ----------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> Tensor:
        x0, target, labels = batch
        t = sample_from(self.t_probs, x0.shape[0], x0.device)
        logits = self(self.diffuse(x0, t), t, labels)
        loss = F.binary_cross_entropy_with_logits(logits, target.float())
        if not torch.isfinite(loss):
            raise ConfigError("discriminator.lr", f"non-finite discriminator loss {float(loss)}: lower it")
        acc = ((logits > 0).float() == target.float()).float().mean()
        self.log_dict({"train/loss": loss.detach(), "train/acc": acc}, on_step=True, on_epoch=False,
                      prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x0, target, labels = batch
        g = torch.Generator().manual_seed(7919 * batch_idx + 17)  # the same t and noise every epoch
        t = torch.randint(self.schedule.num_timesteps, (x0.shape[0],), generator=g).to(x0.device)
        logits = self(self.diffuse(x0, t, g), t, labels)
        self._val.append((t.cpu(), logits.detach().cpu(), target.cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        t, logits, target = (torch.cat(parts) for parts in zip(*self._val))
        self._val = []
        self.heldout = bucket_metrics(t, logits, target, self.schedule.num_timesteps, self.spec["buckets"],
                                      self.spec["ece_bins"])
        logs = {}
        for row in self.heldout:
            suffix = "" if row["bucket"] == "all" else f"_t{row['bucket']}"
            for key in ("acc", "bce", "ece"):
                if row[key] is not None:
                    logs[f"val/{key}{suffix}"] = row[key]
        self.log_dict(logs, on_epoch=True, prog_bar=False)

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.spec["lr"], betas=tuple(self.spec["betas"]),
                                weight_decay=self.spec["weight_decay"])

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint.setdefault("difgan", {}).update({
            "kind": KIND, "spec": self.spec, "config": self.run_config, "heldout": self.heldout,
            "image_shape": list(self.image_shape), "num_classes": self.num_classes})

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.heldout = checkpoint.get("difgan", {}).get("heldout")


def is_discriminator_checkpoint(ckpt: dict) -> bool:
    return ckpt.get("difgan", {}).get("kind") == KIND


def load_discriminator(path, map_location: str | torch.device = "cpu") -> TimeDiscriminatorModule:
    """A trained discriminator from its checkpoint (file or run folder), in eval mode, frozen."""
    from difgan.checkpoint import load_checkpoint, resolve_checkpoint

    p = resolve_checkpoint(path)
    ckpt = load_checkpoint(p, map_location)
    if not is_discriminator_checkpoint(ckpt):
        raise CheckpointError(f"{p} is not a discriminator checkpoint (task=train_discriminator writes them)")
    spec = dict(ckpt["difgan"]["spec"])
    module = TimeDiscriminatorModule(**spec)
    module.load_state_dict(ckpt["state_dict"], strict=True)
    module.on_load_checkpoint(ckpt)
    module.requires_grad_(False)
    return module.to(map_location).eval()


def discriminator_report(path) -> dict | None:
    """For ``difgan.evaluate``: a discriminator checkpoint's held-out table (accuracy, BCE, ECE overall and
    per t bucket, from its last validation) and settings; None if ``path`` holds another kind of model."""
    from difgan.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, mmap=True)
    if not is_discriminator_checkpoint(ckpt):
        return None
    spec = ckpt["difgan"]["spec"]
    return {"kind": KIND, "heldout": ckpt["difgan"].get("heldout"),
            "protocol": {"checkpoint": str(path), "backbone": spec["backbone"],
                         "t_sampling": spec["t_sampling"],
                         "timesteps": ckpt["difgan"]["spec"]["schedule"].get("timesteps"),
                         "diffusion_ckpt": ((ckpt["difgan"].get("config") or {}).get("discriminator") or {})
                         .get("diffusion_ckpt")}}
