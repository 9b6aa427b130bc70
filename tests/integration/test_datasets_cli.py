"""``python -m difgan.run`` trains on every on-disk dataset format (the fixtures' tiny copies) for one batch
and writes a checkpoint in a run folder of its own; a missing dataset stops the run with one line, no
traceback. Through Hydra's real ``main`` in this process (the fresh-interpreter smoke run is
test_run_cli.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.runner import hydra_main, one_line_error

DATASETS = ["mnist", "fashion_mnist", "cifar10", "stl10", "celeba", "image_folder"]
QUIET = ["model=dcgan", "model.base_channels=8", "trainer.max_steps=2", "logger=csv", "metrics=none",
         "trainer.enable_progress_bar=false", "++trainer.enable_model_summary=false", "callbacks.samples.n=4",
         "data.num_workers=0"]


def _paths(tmp: Path, data_dir: Path) -> list[str]:
    return [f"paths.data_dir={data_dir}", f"paths.runs_dir={tmp / 'runs'}",
            f"paths.cache_dir={tmp / 'cache'}"]


@pytest.mark.parametrize("name", DATASETS)
def test_training_runs_on_each_dataset_and_writes_a_checkpoint(tmp_path, dataset_roots, name):
    data_dir, overrides = dataset_roots[name]
    result = hydra_main(*QUIET, f"data={name}", *_paths(tmp_path, data_dir), *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "images seen, 1 batches, global_step 2" in result.stdout
    checkpoints = list((tmp_path / "runs").glob(f"dcgan_{name}/*/checkpoints/last.ckpt"))
    assert len(checkpoints) == 1 and checkpoints[0].stat().st_size > 0
    # the default run folder is named to the microsecond: runs started in the same second do not share it
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d{6}", checkpoints[0].parents[1].name)


def test_missing_dataset_stops_with_one_line(tmp_path):
    empty = tmp_path / "no_data"
    line = one_line_error(hydra_main(*QUIET, "data=cifar10", *_paths(tmp_path, empty)))
    assert line.startswith(f"error: dataset cifar10 not found in {empty}")
    assert "cifar-10-batches-py/batches.meta" in line and "data.download=true" in line
