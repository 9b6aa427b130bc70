"""The real command line: the suite's one fresh-interpreter smoke run (a short run and what it leaves on
disk), then sampling from its checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.integration.runner import entry


def run_cli(module: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_short_run_leaves_a_complete_run_folder_and_samples(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("difgan.run", "model=dcgan_cond", "model.base_channels=8", "data.batch_size=16",
                   "trainer.max_steps=6", "trainer.log_every_n_steps=1",
                   "callbacks.samples.every_n_batches=2", "callbacks.samples.n=20",
                   "metrics=none", "logger=csv", "seed=0", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"run folder : {run_dir}" in proc.stdout
    assert "done: 48 images seen, 3 batches, global_step 6" in proc.stdout

    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["seed"] == 0 and "git_commit" in meta and meta["versions"]["torch"] == torch.__version__
    assert "seed: 0" in (run_dir / "config.yaml").read_text()
    assert {p.name for p in (run_dir / "samples").glob("*.png")} >= {"batch_0000002.png", "final.png"}
    header = (run_dir / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "train/d_loss" in header and "train/g_loss" in header and "train/kimg" in header

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["difgan"]["images_seen"] == 48 and ckpt["difgan"]["num_classes"] == 10
    assert any(k.startswith("ema.averaged.") for k in ckpt["state_dict"])

    # sampling from it: in this process (one fresh interpreter is enough for the smoke run)
    out = tmp_path / "threes.png"
    result = entry("difgan.sample", f"ckpt_path={run_dir}", "n=9", "labels=[3]", f"out={out}",
                   f"paths.runs_dir={tmp_path / 'runs'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file() and "EMA weights" in result.stdout
