"""User mistakes on the command line stop ``python -m difgan.run`` before any training, with exit status 1 and
one ``error: ...`` line naming the config key to change (Hydra's own errors list the valid choices); never
a traceback. Most cases run Hydra's real ``main`` in this process (an interpreter with Lightning costs ~8 s
to start here); one goes through a real process end to end, started first and checked last."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.runner import finish, hydra_main, one_line_error, running


def _base(tmp: Path, data_dir: Path) -> list[str]:
    """Overrides of a tiny run on the mnist_root fixture, its folders under ``tmp``."""
    return ["model=dcgan", "model.base_channels=8", "data=mnist", f"paths.data_dir={data_dir}",
            "data.batch_size=8", "metrics=none", "logger=csv", f"paths.runs_dir={tmp / 'runs'}",
            f"paths.cache_dir={tmp / 'cache'}", "trainer.max_steps=2"]


@pytest.fixture
def base(tmp_path, mnist_root) -> list[str]:
    return _base(tmp_path, mnist_root.data_dir)


@pytest.fixture(scope="module", autouse=True)
def real_cli(tmp_path_factory, mnist_root):
    """The real process starts first and runs while the in-process cases do; its test comes last."""
    tmp = tmp_path_factory.mktemp("real_cli")
    with running(*_base(tmp, mnist_root.data_dir), "data.batch_size=-4", cwd=tmp) as proc:
        yield tmp, proc


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
    # A sweep goes on past failed jobs; its one line names them and the first job's error.
    assert line.startswith("error: 2 of 2 sweep jobs did not complete"), line
    assert "job 0: config error: trainer.strategy: " in line, line
    assert "trainer=ddp_spawn" in line and "hydra/launcher=slurm" in line


@pytest.mark.slow
def test_real_cli_prints_one_line_and_no_traceback(real_cli):
    tmp, proc = real_cli
    line = one_line_error(finish(proc))
    assert line == "error: config error: data.batch_size: must be a positive integer, got -4"
    assert not list((tmp / "runs").rglob("*.ckpt"))


def test_runs_started_in_the_same_second_get_folders_of_their_own(base, tmp_path, monkeypatch):
    """Hydra names the default run folder with ``${now:...}``: freeze the clock's second (a shell loop
    starting runs back to back) and the two runs must still not share a folder."""
    import datetime as dt

    import hydra.core.utils

    ticks = iter(range(1, 1000))

    class SameSecond(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2026, 1, 2, 3, 4, 5, next(ticks))

    monkeypatch.setattr(hydra.core.utils, "datetime", SameSecond)
    for _ in range(2):
        one_line_error(hydra_main(*base, "seed=null"))  # Hydra made the folder; the run stopped at once
    folders = sorted(p.name for p in (tmp_path / "runs" / "dcgan_mnist").iterdir())
    assert len(folders) == 2 and all(f.startswith("2026-01-02_03-04-05_") for f in folders), folders
