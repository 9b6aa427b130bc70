"""Every model x data pair and every experiment file composes, and builds or refuses with a named key."""

from __future__ import annotations

import pytest

from difgan.build import build_model
from difgan.confdir import CONF_DIR as CONF
from difgan.errors import ConfigError

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# 16-50M parameters: compose only
HEAVY = {"ddpm_cifar", "ddpm_seed001", "ddpm_cosine", "stylegan2", "stylegan2_seed001", "diffusion_gan",
         "diffusion_gan_seed001"}


def test_there_is_something_to_compose():
    assert "dcgan" in MODELS and "mnist_offline" in DATA and "quickstart" in EXPERIMENTS


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_model_data_pair_composes_and_builds(compose_run, model, data):
    cfg = compose_run([f"model={model}", f"data={data}"])
    assert cfg.model.name and cfg.data.name == data
    shape = (cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
    if model in HEAVY:
        return
    try:
        module = build_model(cfg.model, shape, num_classes=10)
    except ConfigError as e:  # a pair that cannot work must say which key to change
        assert e.key.startswith(("model.", "data.")), e
        return
    assert module.image_shape == shape


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(compose_run, experiment):
    cfg = compose_run([f"experiment={experiment}"])
    assert cfg.model._target_ and cfg.data._target_
