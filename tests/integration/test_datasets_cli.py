"""``python -m difgan.run`` trains on every on-disk dataset format (the fixtures' tiny copies) for two
optimizer steps and writes a checkpoint; a missing dataset stops the run with one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DATASETS = ["mnist", "fashion_mnist", "cifar10", "stl10", "celeba", "image_folder"]


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DIFGAN_ROOT": str(tmp_path), "DIFGAN_RUNS": str(tmp_path / "runs"),
           "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "difgan.run", *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("name", DATASETS)
def test_training_runs_on_each_dataset_and_writes_a_checkpoint(tmp_path, dataset_roots, name):
    data_dir, overrides = dataset_roots[name]
    result = run_cli(tmp_path, "model=dcgan", f"data={name}", f"paths.data_dir={data_dir}",
                     "trainer.max_steps=2", "logger=csv", "metrics=none", "trainer.enable_progress_bar=false",
                     *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = list((tmp_path / "runs").glob(f"dcgan_{name}/*/checkpoints/last.ckpt"))
    assert len(checkpoints) == 1 and checkpoints[0].stat().st_size > 0


@pytest.mark.slow
def test_missing_dataset_stops_with_one_line(tmp_path):
    empty = tmp_path / "no_data"
    result = run_cli(tmp_path, "model=dcgan", "data=cifar10", f"paths.data_dir={empty}", "logger=csv")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: dataset cifar10 not found in {empty}")
    assert "cifar-10-batches-py/batches.meta" in lines[-1] and "data.download=true" in lines[-1]
    assert "Traceback" not in result.stderr
