"""Every model x data pair builds, except the pairs known to be impossible, which refuse with a ConfigError
naming the key to change; every experiment file composes and instantiates its model and datamodule.

Models are built narrow (``base_channels``/``unet.channels`` 8): what makes a pair impossible is the
resolution, the number of levels and where attention sits, not the width. Each model and each data config
is composed once (a model config depends on the data only through the image shape ``build_model`` gets)."""

from __future__ import annotations

import functools

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from difgan.build import build_datamodule, build_model
from difgan.confdir import CONF_DIR
from difgan.data import ImageDataModule
from difgan.errors import ConfigError
from difgan.models.base import GenerativeModule

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# The impossible pairs and the key each must name; every other pair must build.
UNFIT_28PX = {"mnist": "model.unet.channel_mult", "mnist_offline": "model.unet.channel_mult"}
STYLEGAN2 = ("stylegan2", "stylegan2_digits", "stylegan2_seed001", "diffusion_gan", "diffusion_gan_digits",
             "diffusion_gan_seed001")
IMPOSSIBLE = {
    **{(m, d): "data.resolution" for m in STYLEGAN2 for d in UNFIT_28PX},  # powers of two only
    **{("ddpm_cifar", d): key for d, key in UNFIT_28PX.items()},      # 4 levels: 28 px halves twice only
    **{("ddpm_cosine", d): key for d, key in UNFIT_28PX.items()},
    **{("ddgan_cifar", d): key for d, key in UNFIT_28PX.items()},     # the paper's 4-level CIFAR-10 UNet
    **{("ddpm_cosine", d): "model.unet.attention_resolutions"         # attention at 4 px: a 32 px network
       for d in ("celeba", "image_folder", "stl10")},
}


@functools.cache
def _compose(*overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="run", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def _narrow(model: str) -> list[str]:
    cfg = _compose(f"model={model}")
    if "unet" in cfg.model:
        return ["model.unet.channels=8"]
    if "channel_max" in cfg.model:  # StyleGAN2 backbones
        return ["model.channel_max=16", "model.w_dim=32", "model.latent_dim=32"]
    if "base_channels" in cfg.model:
        return ["model.base_channels=8"]
    if "channels" in cfg.model and "d_channels" in cfg.model:  # DifGAN, DDGAN
        return ["model.channels=8", "model.d_channels=8"]
    return []  # the MLP GANs: ~2M parameters as configured


@functools.cache
def _build(model: str, shape: tuple[int, int, int]):
    """The built module, or the ConfigError it raised (cached: several data configs share a shape)."""
    cfg = _compose(f"model={model}", *_narrow(model))
    try:
        return build_model(cfg.model, shape, num_classes=10)
    except ConfigError as e:
        return e


def test_there_is_something_to_compose():
    assert {"dcgan", "ddpm"} <= set(MODELS) and "mnist_offline" in DATA and "quickstart" in EXPERIMENTS
    assert set(IMPOSSIBLE) <= {(m, d) for m in MODELS for d in DATA}


@pytest.mark.parametrize("data", DATA)
def test_data_config_instantiates(data):
    cfg = _compose(f"data={data}")
    dm = build_datamodule(cfg.data)
    assert isinstance(dm, ImageDataModule) and dm.name == cfg.data.name == data


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_model_data_pair_builds_or_is_known_impossible(model, data):
    d = _compose(f"data={data}").data
    shape = (d.channels, d.resolution, d.resolution)
    built = _build(model, shape)
    if (model, data) in IMPOSSIBLE:
        assert isinstance(built, ConfigError), f"{model} x {data} was expected to be impossible"
        assert built.key == IMPOSSIBLE[model, data], built
    else:
        assert isinstance(built, GenerativeModule), f"{model} x {data}: {built}"
        assert built.image_shape == shape and built.is_conditional == bool(_compose(f"model={model}").model
                                                                             .get("conditional", False))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment):
    cfg = _compose(f"experiment={experiment}")
    dm = build_datamodule(cfg.data)
    model = build_model(cfg.model, (cfg.data.channels, cfg.data.resolution, cfg.data.resolution),
                        num_classes=10)
    assert isinstance(model, GenerativeModule) and dm.name == cfg.data.name
    assert model.image_shape == (cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
