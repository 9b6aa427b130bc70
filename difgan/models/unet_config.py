"""The ``model.unet`` config node -> a ``UNet``, with every impossible value a ConfigError naming its key.
Shared by the models built on the UNet (DDPM's noise predictor, DifGAN's step generator, DDGAN's x_0
predictor), each with its own defaults."""

from __future__ import annotations

from typing import Any

from difgan.errors import ConfigError
from difgan.nets.unet import UNet, level_resolutions, resolve_attention

UNET_KEYS = ("channels", "channel_mult", "num_res_blocks", "attention_resolutions", "dropout",
             "attention_heads", "mid_attention")


def unet_options(defaults: dict[str, Any], given: dict | None, key: str = "model.unet") -> dict[str, Any]:
    """``defaults`` overridden by the config's ``given`` keys (null: the default); unknown keys are a
    ConfigError."""
    options = {**defaults, **{k: v for k, v in (dict(given) if given else {}).items() if v is not None}}
    unknown = set(options) - set(UNET_KEYS)
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}", f"unknown key; valid: {', '.join(UNET_KEYS)}")
    return options


def build_unet(o: dict[str, Any], in_channels: int, resolution: int, key: str = "model.unet",
               **extra) -> UNet:
    """A UNet from validated options ``o`` (see ``unet_options``); ``extra`` are further UNet arguments
    (num_classes, out_channels, time_embedding_kind, num_timesteps, cond_dim)."""
    mult = tuple(int(m) for m in o["channel_mult"])
    try:
        sizes = level_resolutions(resolution, len(mult))
    except ValueError as e:
        raise ConfigError(f"{key}.channel_mult", f"{e} (data.resolution={resolution})") from None
    attn = o["attention_resolutions"]
    attn = list(attn) if attn is not None and not isinstance(attn, str | int) else attn
    try:
        resolve_attention(attn, sizes)
    except ValueError as e:
        raise ConfigError(f"{key}.attention_resolutions", str(e)) from None
    try:
        return UNet(in_channels, resolution, channels=int(o["channels"]), channel_mult=mult,
                    num_res_blocks=int(o["num_res_blocks"]), attention_resolutions=attn,
                    dropout=float(o["dropout"]), attention_heads=int(o["attention_heads"]),
                    mid_attention=bool(o["mid_attention"]), **extra)
    except ValueError as e:
        raise ConfigError(key, str(e)) from None
