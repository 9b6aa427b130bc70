"""``python -m difgan.sample ckpt_path=... n=64``: a sample grid from any checkpoint of any model."""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from difgan.callbacks.samples import grid_labels
from difgan.checkpoint import load_generative_module, resolve_checkpoint
from difgan.confdir import CONF_DIR
from difgan.errors import ConfigError, run_reporting_errors
from difgan.samples_io import FORMATS, default_name, write_samples

MODEL_OPTIONS = ("sampler", "sampling_steps", "eta", "guidance_scale")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sample_in_batches(module, n: int, labels, batch_size: int, generator: torch.Generator, **options):
    """``module.sample`` in chunks of ``batch_size`` (same images for any batch size when noise is fixed)."""
    noise = torch.randn((n, *module.noise_shape), generator=generator).to(module.device)
    chunks = []
    for start in range(0, n, batch_size):
        sl = slice(start, min(n, start + batch_size))
        chunks.append(module.sample(sl.stop - sl.start, None if labels is None else labels[sl],
                                    noise=noise[sl], generator=generator, **options).cpu())
    return torch.cat(chunks)


def sample(cfg: DictConfig) -> Path:
    if cfg.n < 1:
        raise ConfigError("n", f"must be positive, got {cfg.n}")
    fmt = str(cfg.get("format", "png"))
    if fmt not in FORMATS:
        raise ConfigError("format", f"unknown {fmt!r}; valid: {', '.join(FORMATS)}")
    ckpt = resolve_checkpoint(cfg.ckpt_path)
    device = pick_device(cfg.device)
    module, run_cfg = load_generative_module(ckpt, map_location=device)
    labels = None
    if module.is_conditional:
        if cfg.labels is None:
            labels = grid_labels(cfg.n, module.num_classes)
        else:
            given = list(cfg.labels) if not isinstance(cfg.labels, int) else [cfg.labels]
            labels = torch.tensor((given * cfg.n)[: cfg.n] if len(given) < cfg.n else given[: cfg.n])
        labels = labels.to(device)
    elif cfg.labels is not None:
        raise ConfigError("labels", "this model is unconditional")
    options = {k: cfg[k] for k in MODEL_OPTIONS if cfg.get(k) is not None}
    generator = torch.Generator().manual_seed(cfg.seed)
    images = sample_in_batches(module, cfg.n, labels, cfg.batch_size, generator, use_ema=cfg.use_ema,
                               **options)
    stem = f"sample_{time.strftime('%Y%m%d-%H%M%S')}"
    default_out = ckpt.parent.parent / "samples" / default_name(fmt, stem)
    out = write_samples(images, Path(cfg.out) if cfg.out else default_out, fmt)
    print(f"{cfg.n} samples from {ckpt} ({'EMA' if cfg.use_ema and module.ema is not None else 'raw'} weights"
          f"{', ' + ', '.join(f'{k}={v}' for k, v in options.items()) if options else ''}) -> {out}")
    return out


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sample")
def main(cfg: DictConfig):
    return run_reporting_errors(sample, cfg, errors=(ValueError,))


if __name__ == "__main__":
    main()
