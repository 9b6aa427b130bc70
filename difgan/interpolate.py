"""Latent interpolation (seed 001, section 3.5.6): image strips between pairs of latent points.

- GANs: in z (spherical interpolation, z being Gaussian) and, for StyleGAN-like models, in w (linear).
  A model offers w by listing "w" in ``latent_spaces`` and implementing ``map_latent`` and
  ``sample_from_w`` (declared on ``GenerativeModule``).
- Diffusion models: spherical interpolation of the initial noise x_T, sampled with a deterministic sampler
  (the model's ``deterministic_sample_options()``, e.g. DDIM with eta 0, merged under the given
  ``sample_options``).
- ``max_distance`` (seed 001's alpha) moves the second end point towards the first until they are at most
  that far apart, so strips between nearby points can be inspected.

``python -m difgan.interpolate ckpt_path=... rows=4 steps=7`` writes ``interpolation_<space>.png``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torchvision.utils import save_image

from difgan.confdir import CONF_DIR
from difgan.errors import ConfigError, run_reporting_errors

SPACES = ("auto", "z", "w", "noise")
METHODS = ("auto", "lerp", "slerp")


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """(len(t), *a.shape): (1 - t) a + t b."""
    t = t.to(a).view(-1, *([1] * a.ndim))
    return (1 - t) * a + t * b


def slerp(a: Tensor, b: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation between a and b (any shape, treated as flat vectors), as in the StyleGAN and
    DDIM papers; falls back to lerp for (nearly) parallel end points."""
    fa, fb = a.reshape(-1).double(), b.reshape(-1).double()
    cos = (fa @ fb / (fa.norm() * fb.norm()).clamp_min(eps)).clamp(-1, 1)
    theta = torch.arccos(cos)
    if theta.abs() < 1e-4:
        return lerp(a, b, t)
    tt = t.double().view(-1, 1)
    out = (torch.sin((1 - tt) * theta) * fa + torch.sin(tt * theta) * fb) / torch.sin(theta)
    return out.to(a.dtype).view(len(t), *a.shape)


def limit_distance(a: Tensor, b: Tensor, max_distance: float | None) -> Tensor:
    """``b`` moved along the line towards ``a`` so that ||a - b|| <= max_distance."""
    if max_distance is None:
        return b
    d = (b - a).norm()
    return b if d <= max_distance else a + (b - a) * (max_distance / d)


def resolve_space(module, space: str) -> str:
    if space not in SPACES:
        raise ConfigError("space", f"unknown {space!r}; valid: {', '.join(SPACES)}")
    has_w = "w" in module.latent_spaces
    if space == "auto":
        if has_w:
            return "w"
        return "noise" if tuple(module.noise_shape) == tuple(module.image_shape) else "z"
    if space == "w" and not has_w:
        raise ConfigError("space", f"{type(module).__name__} has no mapping network "
                          "(map_latent/sample_from_w); use space=z")
    return space


@torch.no_grad()
def interpolate(module, rows: int = 4, steps: int = 7, space: str = "auto", method: str = "auto",
                max_distance: float | None = None, labels: list[int] | None = None, use_ema: bool = True,
                seed: int = 0, sample_options: dict | None = None) -> tuple[Tensor, dict]:
    """Images (rows, steps, C, H, W) in [-1, 1] along ``rows`` interpolation paths, and what was done."""
    if rows < 1 or steps < 2:
        raise ConfigError("steps", "need rows >= 1 and steps >= 2")
    if method not in METHODS:
        raise ConfigError("method", f"unknown {method!r}; valid: {', '.join(METHODS)}")
    space = resolve_space(module, space)
    method = ("lerp" if space == "w" else "slerp") if method == "auto" else method
    options = module.deterministic_sample_options() if space == "noise" else {}
    options.update(sample_options or {})
    device = module.device
    g = torch.Generator().manual_seed(int(seed))
    t = torch.linspace(0, 1, steps)
    if module.is_conditional:
        row_labels = list(labels) if labels else [r % module.num_classes for r in range(rows)]
        if len(row_labels) != rows:
            raise ConfigError("labels", f"give one label per row ({rows}), got {len(row_labels)}")
        lab = torch.tensor(row_labels).repeat_interleave(steps).to(device)
    else:
        if labels:
            raise ConfigError("labels", f"{type(module).__name__} is unconditional")
        lab = None
    strips = []
    for r in range(rows):
        z1 = torch.randn(module.noise_shape, generator=g)
        z2 = torch.randn(module.noise_shape, generator=g)
        row_lab = None if lab is None else lab[r * steps:(r + 1) * steps]
        if space == "w":
            first_label = None if row_lab is None else row_lab[:1]
            w1, w2 = (module.map_latent(z.unsqueeze(0).to(device), first_label, use_ema=use_ema)[0]
                      for z in (z1, z2))
            w2 = limit_distance(w1, w2, max_distance)
            path = (lerp if method == "lerp" else slerp)(w1, w2, t.to(device))
            images = module.sample_from_w(path, row_lab, use_ema=use_ema, **options)
        else:
            z2 = limit_distance(z1, z2, max_distance)
            path = (lerp if method == "lerp" else slerp)(z1, z2, t).to(device)
            gen = torch.Generator(device=device).manual_seed(int(seed) + 1)  # same sampler noise every row
            images = module.sample(steps, row_lab, use_ema=use_ema, noise=path, generator=gen, **options)
        strips.append(images.clamp(-1, 1).cpu())
    info = {"space": space, "method": method, "rows": rows, "steps": steps, "max_distance": max_distance,
            "seed": seed, "sample_options": options,
            "weights": "ema" if use_ema and module.ema is not None else "raw"}
    return torch.stack(strips), info


def save_strips(images: Tensor, path: Path) -> Path:
    """One PNG: a row per interpolation path, end points at the left and right edges."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, steps = images.shape[:2]
    save_image(images.reshape(rows * steps, *images.shape[2:]).float(), path, nrow=steps, normalize=True,
               value_range=(-1, 1), padding=2)
    return path


def run_interpolation(cfg: DictConfig) -> list[Path]:
    from difgan.checkpoint import load_generative_module
    from difgan.devices import pick_device

    module, _ = load_generative_module(cfg.ckpt_path, map_location=pick_device(str(cfg.device)))
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir)
    options = OmegaConf.to_container(cfg.sample_options, resolve=True) if cfg.sample_options else {}
    labels = list(cfg.labels) if cfg.labels else None
    space = resolve_space(module, str(cfg.space))
    spaces = ["z", "w"] if space == "w" and cfg.space == "auto" else [space]
    paths = []
    for s in spaces:
        images, info = interpolate(module, cfg.rows, cfg.steps, s, str(cfg.method), cfg.max_distance, labels,
                                   cfg.use_ema, cfg.seed, options)
        paths.append(save_strips(images, out / f"interpolation_{s}.png"))
        print(f"{info['space']} ({info['method']}, {info['rows']}x{info['steps']}) -> {paths[-1]}")
    return paths


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="interpolate")
def main(cfg: DictConfig):
    return run_reporting_errors(run_interpolation, cfg)


if __name__ == "__main__":
    main()
