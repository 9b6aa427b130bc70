"""Shared fixtures. Tests run offline: W&B disabled unless a test enables offline mode itself."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from difgan.confdir import compose_config  # noqa: E402

torch.set_num_threads(1)  # small tensors run ~20x slower with 2 threads on a shared 2-core machine

pytest_plugins = ["tests.fixtures.datasets"]


@pytest.fixture
def compose_run():
    """compose_run(overrides) -> the composed run config, exactly as ``python -m difgan.run`` builds it."""

    def _compose(overrides=()):
        return compose_config("run", overrides)

    return _compose
