"""``python -m difgan.run task=train_discriminator discriminator.diffusion_ckpt=<run folder or .ckpt>``.

Trains a time-conditioned discriminator (``difgan.models.discriminator``) to tell real images from samples of
a frozen diffusion model, both diffused to x_t. Steps:

1. load the diffusion model and the dataset it was trained on (its checkpoint's data config);
2. fakes: ``discriminator.samples`` (a ``.npz`` or a folder of images, e.g. written by ``difgan.sample``) or
   ``n_fake`` fresh samples (``discriminator.sample_options``), saved as ``<run>/fakes.npz`` so a resumed run
   trains on the same set; as many real training images;
3. a held-out fraction of both (``heldout``) scored every epoch per t bucket (accuracy, BCE, ECE);
4. ``checkpoints/last.ckpt`` (a discriminator checkpoint) and ``discriminator_metrics.json`` (held-out table).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from difgan.errors import ConfigError
from difgan.validation import check_choice, check_int, require

SCHEDULE_KEYS = {"schedule": "schedule", "timesteps": "timesteps", "beta_start": "beta_start",
                 "beta_end": "beta_end", "cosine_s": "cosine_s"}


def load_image_array(path: str | Path) -> torch.Tensor:
    """uint8 (N, C, H, W) images from a ``.npz``/``.npy`` (key ``images`` or the first array; NCHW or NHWC,
    uint8 or floats in [-1, 1]) or a folder of image files (sorted by name)."""
    p = Path(path).expanduser()
    if p.is_dir():
        from PIL import Image

        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        if not files:
            raise ConfigError("discriminator.samples", f"no image files in {p}")
        arr = np.stack([np.asarray(Image.open(f)) for f in files])
    elif p.is_file() and p.suffix in (".npz", ".npy"):
        data = np.load(p)
        arr = data if isinstance(data, np.ndarray) else (data["images"] if "images" in data.files
                                                         else data[data.files[0]])
    else:
        raise ConfigError("discriminator.samples", f"not a .npz/.npy file or an image folder: {p}")
    x = torch.from_numpy(np.asarray(arr))
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ConfigError("discriminator.samples",
                          f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.dtype != torch.uint8:
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.contiguous()


def real_images(datamodule, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training images (uint8) and labels of the datamodule's (shuffled) train split."""
    ds = datamodule.split("train")
    if hasattr(ds, "images"):
        return ds.images[:n], ds.labels[:n]
    items = [ds[i] for i in range(min(n, len(ds)))]
    return torch.stack([torch.as_tensor(im) for im, _ in items]), torch.tensor([int(y) for _, y in items])


@torch.no_grad()
def generate_fakes(module, n: int, batch_size: int, seed: int, options: dict, use_ema: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    from difgan.data.datamodule import to_uint8

    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % module.num_classes) if module.is_conditional else torch.full((n,), -1)
    chunks = []
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        lab = labels[s:e].to(module.device) if module.is_conditional else None
        chunks.append(to_uint8(module.sample(e - s, lab, generator=g, use_ema=use_ema, **options)).cpu())
    return torch.cat(chunks), labels


def _check(d: DictConfig) -> None:
    if not d.get("diffusion_ckpt"):
        raise ConfigError("discriminator.diffusion_ckpt",
                          "give the diffusion model's run folder or checkpoint")
    for key in ("n_fake", "batch_size", "epochs"):
        check_int(f"discriminator.{key}", d.get(key))
    require("discriminator.heldout", d.heldout, 0 < d.heldout < 1, "a fraction in (0, 1)")
    from difgan.diffusion.discriminator_guidance import T_SAMPLING
    from difgan.models.discriminator import BACKBONES

    check_choice("discriminator.backbone", d.backbone, BACKBONES)  # before the (slow) fakes are drawn
    check_choice("discriminator.t_sampling", d.t_sampling, T_SAMPLING)


def train_discriminator(cfg: DictConfig) -> list[dict] | None:
    from difgan.build import build_datamodule
    from difgan.callbacks.checkpoint import LastCheckpoint
    from difgan.checkpoint import LAST, load_generative_module
    from difgan.data.datamodule import to_signed_float
    from difgan.loggers import build_loggers, finish_wandb
    from difgan.models.ddpm import DDPM
    from difgan.models.discriminator import TimeDiscriminatorModule
    from difgan.resume import resume_checkpoint
    from difgan.run import write_run_metadata

    d = cfg.discriminator
    _check(d)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    diffusion, dcfg = load_generative_module(d.diffusion_ckpt)
    if not isinstance(diffusion, DDPM):
        raise ConfigError("discriminator.diffusion_ckpt", f"needs a diffusion model (DDPM family), got "
                          f"{type(diffusion).__name__}")
    data_cfg = dcfg.data if not d.get("data_root") else OmegaConf.merge(dcfg.data, {"root": d.data_root})
    dm = build_datamodule(data_cfg, seed=cfg.seed)

    fakes_file = run_dir / "fakes.npz"
    if d.get("samples"):
        fakes = load_image_array(d.samples)
        fake_labels = torch.full((len(fakes),), -1, dtype=torch.long)
        if diffusion.is_conditional:
            raise ConfigError("discriminator.samples", "a class-conditional discriminator needs the fakes' "
                              "labels: let the task generate them (samples=null)")
    elif fakes_file.is_file():  # a resumed run trains on the fakes it drew first
        stored = np.load(fakes_file)
        fakes, fake_labels = torch.from_numpy(stored["images"]), torch.from_numpy(stored["labels"])
    else:
        options = {k: v for k, v in (OmegaConf.to_container(d.sample_options, resolve=True) if
                                     d.get("sample_options") else {}).items() if v is not None}
        print(f"drawing {d.n_fake} samples from {d.diffusion_ckpt} ({options or 'default sampler'})")
        fakes, fake_labels = generate_fakes(diffusion, int(d.n_fake), int(d.batch_size), int(cfg.seed),
                                            options,
                                            bool(d.get("use_ema", True)))
        run_dir.mkdir(parents=True, exist_ok=True)
        np.savez(fakes_file, images=fakes.numpy(), labels=fake_labels.numpy())
    if tuple(fakes.shape[1:]) != tuple(dm.image_shape):
        raise ConfigError("discriminator.samples", f"fakes have shape {tuple(fakes.shape[1:])}, the data "
                          f"{tuple(dm.image_shape)}")
    n = min(int(d.n_fake), len(fakes))
    reals, real_labels = real_images(dm, n)
    n = min(n, len(reals))
    if n < 4:
        raise ConfigError("discriminator.n_fake", f"only {n} real/fake pairs: too few to train and hold out")
    images = torch.cat([reals[:n], fakes[:n]])
    target = torch.cat([torch.ones(n), torch.zeros(n)])
    labels = torch.cat([real_labels[:n], fake_labels[:n]]).long()
    g = torch.Generator().manual_seed(int(cfg.seed))
    n_held = max(1, int(round(float(d.heldout) * n)))
    perm_r, perm_f = torch.randperm(n, generator=g), torch.randperm(n, generator=g) + n
    held = torch.cat([perm_r[:n_held], perm_f[:n_held]])
    train = torch.cat([perm_r[n_held:], perm_f[n_held:]])
    x = to_signed_float(images)

    def loader(idx, shuffle):
        ds = TensorDataset(x[idx], target[idx], labels[idx])
        return DataLoader(ds, batch_size=int(d.batch_size), shuffle=shuffle, drop_last=False,
                          generator=torch.Generator().manual_seed(int(cfg.seed)) if shuffle else None)

    model_cfg = dcfg.model
    schedule = {k: model_cfg.get(src) for k, src in SCHEDULE_KEYS.items() if model_cfg.get(src) is not None}
    unet_spec = None
    if d.backbone == "unet_encoder":
        u = diffusion.unet
        unet_spec = {"in_channels": u.in_channels, "resolution": u.resolution,
                     "num_classes": u.num_classes, **diffusion.unet_options,
                     "channel_mult": list(diffusion.unet_options["channel_mult"])}
        attn = unet_spec["attention_resolutions"]
        if attn is not None and not isinstance(attn, str | int):
            unet_spec["attention_resolutions"] = list(attn)
    module = TimeDiscriminatorModule(
        dm.image_shape, diffusion.num_classes, schedule, d.backbone, d.base_channels, d.depth,
        d.head_channels, unet_spec, d.lr, tuple(d.betas), d.weight_decay, d.t_sampling, d.buckets, d.ece_bins)
    if unet_spec is not None:  # the frozen encoder is the diffusion model's sampling network
        with diffusion.sampling_weights(use_ema=bool(d.get("use_ema", True))) as net:
            module.net.encoder.load_state_dict(net.state_dict())
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    ckpt_path = resume_checkpoint(cfg, run_dir, module, module.run_config)
    write_run_metadata(run_dir, cfg)
    loggers = build_loggers(cfg.logger, run_dir, run_name=f"{cfg.name}/{run_dir.name}",
                            config=module.run_config)
    callbacks = [LastCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0,
                                every_n_epochs=1, filename="{epoch}-{step}")]
    trainer: L.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir), logger=loggers or False,
                                     callbacks=callbacks, max_epochs=int(d.epochs), limit_val_batches=1.0,
                                     check_val_every_n_epoch=1)
    try:
        trainer.fit(module, train_dataloaders=loader(train, True), val_dataloaders=loader(held, False),
                    ckpt_path=ckpt_path, weights_only=True)
    finally:
        finish_wandb()
    table = module.heldout
    if trainer.is_global_zero:
        out = run_dir / "discriminator_metrics.json"
        out.write_text(json.dumps({"heldout": table, "n_train": len(train), "n_heldout": len(held),
                                   "diffusion_ckpt": str(d.diffusion_ckpt)}, indent=2))
        print(format_heldout(table))
        print(f"run folder : {run_dir}\ncheckpoint : {run_dir / LAST}\nheld-out   : {out}")
    return table


def format_heldout(table: list[dict] | None) -> str:
    if not table:
        return "no held-out metrics"
    lines = ["bucket  tau          n      acc     bce     ece"]
    for r in table:
        if r["n"] == 0:
            lines.append(f"{r['bucket']:<7} ({r['tau'][0]:.2f},{r['tau'][1]:.2f}]  0")
            continue
        lines.append(f"{r['bucket']:<7} ({r['tau'][0]:.2f},{r['tau'][1]:.2f}]  {r['n']:<6} {r['acc']:.3f}   "
                     f"{r['bce']:.3f}   {r['ece']:.3f}")
    return "\n".join(lines)
