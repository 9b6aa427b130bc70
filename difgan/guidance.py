"""Sampling-time guidance hooks from the ``guidance`` config node of ``difgan.sample`` and
``difgan.evaluate`` (docs/guidance.md):

    guidance:
      discriminator: null    # a discriminator checkpoint / run folder, or a list of them (an ensemble)
      weight: 1.0            # w in eps - w sqrt(1 - abar_t) grad log(D / (1 - D)); 0: unguided
      t_min: 0.0             # window as fractions tau = (t + 1) / T
      t_max: 1.0
      ensemble: logits       # logits | probabilities: what an ensemble averages

``guidance_from_config`` returns the hooks to pass as the ``guidance`` sample option (None when no
discriminator is named) and raises ``ConfigError`` naming the key for anything impossible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig, ListConfig

from difgan.diffusion.discriminator_guidance import ENSEMBLE_MODES, DiscriminatorGuidance
from difgan.errors import ConfigError
from difgan.validation import check_choice, require


def _paths(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, ListConfig | Sequence):
        return [str(v) for v in value]
    raise ConfigError("guidance.discriminator", f"a checkpoint path or a list of them, got {value!r}")


def guidance_from_config(gcfg: DictConfig | dict | None, module, device: torch.device | str = "cpu",
                         ) -> list[DiscriminatorGuidance] | None:
    """The guidance hooks ``gcfg`` describes for sampling ``module`` (a diffusion model), or None."""
    if not gcfg:
        return None
    paths = _paths(gcfg.get("discriminator"))
    if not paths:
        return None
    from difgan.models.discriminator import load_discriminator

    if "guidance" not in module.sample_option_names:
        raise ConfigError("guidance.discriminator", f"{type(module).__name__} takes no guidance hooks: "
                          "discriminator guidance needs a diffusion model")
    weight = float(gcfg.get("weight", 1.0))
    t_min, t_max = float(gcfg.get("t_min", 0.0)), float(gcfg.get("t_max", 1.0))
    ensemble = gcfg.get("ensemble", "logits")
    require("guidance.t_min", t_min, 0.0 <= t_min <= 1.0, "a fraction of T in [0, 1]")
    require("guidance.t_max", t_max, t_min <= t_max <= 1.0, "a fraction of T in [t_min, 1]")
    check_choice("guidance.ensemble", ensemble, ENSEMBLE_MODES)
    discriminators = []
    for p in paths:
        d = load_discriminator(p, map_location=device)
        if tuple(d.image_shape) != tuple(module.image_shape):
            raise ConfigError("guidance.discriminator", f"{p} judges images of shape {d.image_shape}, the "
                              f"model makes {tuple(module.image_shape)}")
        T = getattr(module, "num_timesteps", None)
        if T is not None and d.schedule.num_timesteps != T:
            raise ConfigError("guidance.discriminator", f"{p} was trained on T={d.schedule.num_timesteps}, "
                              f"the model has T={T}")
        if d.num_classes and d.num_classes != module.num_classes:
            raise ConfigError("guidance.discriminator", f"{p} is class-conditional on {d.num_classes} "
                              f"classes, the model has {module.num_classes}")
        discriminators.append(d)
    return [DiscriminatorGuidance(discriminators, weight, t_min, t_max, ensemble, sources=paths)]


def guidance_settings(hooks) -> list[dict] | None:
    """What metrics.json records about the hooks."""
    if not hooks:
        return None
    return [h.settings() for h in hooks]
