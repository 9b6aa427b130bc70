"""``python -m difgan.sample ckpt_path=... n=64``: a sample grid from any checkpoint of any model."""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from difgan.callbacks.samples import grid_labels
from difgan.checkpoint import load_generative_module, resolve_checkpoint
from difgan.confdir import CONF_DIR
from difgan.devices import pick_device
from difgan.errors import ConfigError, run_reporting_errors
from difgan.guidance import guidance_from_config
from difgan.samples_io import FORMATS, default_name, write_samples

# Top-level shorthands for the most used sampling options (sampler=ddim is sample_options.sampler=ddim).
SHORTHANDS = ("sampler", "sampling_steps", "eta", "guidance_scale")


def check_keys(cfg: DictConfig) -> None:
    """``+spacing=trailing`` adds a key nobody reads: refuse every key sample.yaml does not have, pointing
    model options to ``sample_options``."""
    known = set(OmegaConf.load(CONF_DIR / "sample.yaml")) - {"defaults"} | {"paths"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        key = unknown[0]
        raise ConfigError(key, f"not a key of difgan.sample; model sampling options go in sample_options: "
                          f"+sample_options.{key}={cfg.get(key)}")


def sampling_options(cfg: DictConfig, module) -> dict:
    """The options for ``module.sample``: ``sample_options`` plus the non-null shorthands, checked against
    the model's ``sample_option_names`` (an unknown name is one line listing the valid ones)."""
    given = OmegaConf.to_container(cfg.sample_options, resolve=True) if cfg.get("sample_options") else {}
    for key in SHORTHANDS:
        if cfg.get(key) is not None:
            if key in given and given[key] != cfg.get(key):
                raise ConfigError(f"sample_options.{key}", f"given twice ({given[key]!r} and {key}="
                                  f"{cfg.get(key)!r}); give it once")
            given[key] = cfg.get(key)
    try:
        module.check_sample_options(given)
    except ValueError as e:
        raise ConfigError("sample_options", str(e)) from None
    return given


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
    check_keys(cfg)
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
    options = sampling_options(cfg, module)
    hooks = guidance_from_config(cfg.get("guidance"), module, device)
    if hooks:
        options["guidance"] = hooks
    generator = torch.Generator().manual_seed(cfg.seed)
    images = sample_in_batches(module, cfg.n, labels, cfg.batch_size, generator, use_ema=cfg.use_ema,
                               **options)
    stamp = time.strftime('%Y%m%d-%H%M%S') + f"_{time.time_ns() // 1000 % 1_000_000:06d}"
    default_out = ckpt.parent.parent / "samples" / default_name(fmt, f"sample_{stamp}")
    out = write_samples(images, Path(cfg.out) if cfg.out else default_out, fmt)
    print(f"{cfg.n} samples from {ckpt} ({'EMA' if cfg.use_ema and module.ema is not None else 'raw'} weights"
          f"{', ' + ', '.join(f'{k}={v}' for k, v in options.items()) if options else ''}) -> {out}")
    return out


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sample")
def main(cfg: DictConfig):
    return run_reporting_errors(sample, cfg, errors=(ValueError,))


if __name__ == "__main__":
    main()
