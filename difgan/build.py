"""Build datamodules and models from composed configs: the one place that connects the two."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from difgan.data import ImageDataModule
from difgan.errors import ConfigError
from difgan.models.base import GenerativeModule

# Keys of a model config that describe it rather than being constructor arguments.
# pretrained: a run folder or checkpoint to start from (``load_pretrained``); pretrained_networks: which of
# the model's networks to take from it (default: all it holds); pretrained_use_ema: the sampling network
# from the checkpoint's EMA weights (default true).
MODEL_META_KEYS = ("name", "conditional", "pretrained", "pretrained_networks", "pretrained_use_ema")


def _instantiate(node: DictConfig, what: str, **kwargs) -> Any:
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:  # unwrap our own errors so they print as one line
        cause = e.__cause__
        while cause is not None and not isinstance(cause, ConfigError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(e.__cause__, TypeError):
            raise ConfigError(what, str(e.__cause__)) from None
        raise


def _resolved(node: DictConfig, drop: tuple[str, ...] = ()) -> DictConfig:
    """A standalone copy of a config node with interpolations resolved against its parent config."""
    plain = OmegaConf.to_container(node, resolve=True)
    return OmegaConf.create({k: v for k, v in plain.items() if k not in drop})


def build_datamodule(data_cfg: DictConfig, seed: int = 0) -> ImageDataModule:
    return _instantiate(_resolved(data_cfg), "data", seed=seed)


def build_model(model_cfg: DictConfig, image_shape: tuple[int, int, int],
                num_classes: int) -> GenerativeModule:
    """Instantiate ``model_cfg`` for images of ``image_shape``; ``num_classes`` is used only if the config
    says ``conditional: true``."""
    conditional = bool(model_cfg.get("conditional", False))
    if conditional and num_classes < 1:
        raise ConfigError("model.conditional", "a conditional model needs a labelled dataset")
    node = _resolved(model_cfg, drop=MODEL_META_KEYS)
    cls = get_class(node._target_)
    if not issubclass(cls, GenerativeModule):
        raise ConfigError("model._target_", f"{node._target_} is not a GenerativeModule")
    model = _instantiate(node, "model", image_shape=tuple(image_shape),
                         num_classes=num_classes if conditional else 0)
    if model_cfg.get("pretrained"):
        from difgan.checkpoint import load_pretrained

        networks = model_cfg.get("pretrained_networks")
        load_pretrained(model, model_cfg.pretrained, list(networks) if networks else None,
                        use_ema=bool(model_cfg.get("pretrained_use_ema", True)))
    return model
