"""User mistakes on the command line stop ``python -m difgan.run`` before any training, with exit status 1 and
one ``error: ...`` line naming the config key to change (Hydra's own errors list the valid choices); never
a traceback. Most cases run Hydra's real ``main`` in this process (an interpreter with Lightning costs ~8 s
to start here); one goes through a real process end to end."""

from __future__ import annotations

import pytest

from tests.integration.runner import cli, hydra_main, one_line_error


@pytest.fixture
def base(tmp_path, mnist_root) -> list[str]:
    """Overrides of a tiny run on the mnist_root fixture, its folders under tmp_path."""
    return ["model=dcgan", "model.base_channels=8", "data=mnist", f"paths.data_dir={mnist_root.data_dir}",
            "data.batch_size=8", "metrics=none", "logger=csv", f"paths.runs_dir={tmp_path / 'runs'}",
            f"paths.cache_dir={tmp_path / 'cache'}", "trainer.max_steps=2"]


@pytest.mark.slow
def test_real_cli_prints_one_line_and_no_traceback(tmp_path, base):
    result = cli(*base, "data.batch_size=-4", cwd=tmp_path)
    line = one_line_error(result)
    assert line == "error: config error: data.batch_size: must be a positive integer, got -4"
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_unknown_model_lists_the_valid_ones(base):
    result = hydra_main(*base, "model=nope")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Could not find 'model/nope'" in result.stderr
    listed = result.stderr.split("Available options in 'model':")[1]
    assert {"dcgan", "dcgan_cond", "ddpm"} <= set(listed.split())


@pytest.mark.parametrize(("override", "key", "detail"), [
    ("data.batch_size=-4", "data.batch_size", "got -4"),
    ("data.resolution=30", "data.resolution", "not 30"),     # DCGAN makes 4*2^k or 7*2^k px
    ("data.channels=2", "data.channels", "got 2"),
    ("seed=null", "seed", "0 is fine"),
    ("max_kimg=-1", "max_kimg", "got -1"),
    ("model.base_channels=0", "model.base_channels", "got 0"),
    ("model.lr=-1", "model.lr", "-1"),
    ("data.batch_size=64", "data.batch_size", "exceeds the 36 training images"),
])
def test_impossible_value_names_its_key(base, override, key, detail):
    line = one_line_error(hydra_main(*base, override))
    assert line.startswith(f"error: config error: {key}: "), line
    assert detail in line


def test_unknown_class_name_names_data_classes(tmp_path, cifar10_root):
    line = one_line_error(hydra_main(
        "model=dcgan", "model.base_channels=8", "data=cifar10", f"paths.data_dir={cifar10_root.data_dir}",
        *cifar10_root.overrides, "data.classes=[caat]", "metrics=none", "logger=csv",
        f"paths.runs_dir={tmp_path / 'runs'}", "trainer.max_steps=2"))
    assert line.startswith("error: config error: data.classes: unknown class 'caat' for cifar10"), line
    assert "airplane" in line and "cat" in line.split("valid:")[1]


def test_multirun_with_local_ddp_is_refused(base):
    line = one_line_error(hydra_main("-m", *base, "trainer=ddp", "seed=0,1"))
    assert line.startswith("error: config error: trainer.strategy: "), line
    assert "trainer=ddp_spawn" in line and "hydra/launcher=slurm" in line
