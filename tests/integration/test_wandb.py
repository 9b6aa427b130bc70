"""Logging: W&B without credentials runs offline (never a prompt) and leaves syncable run files in the run
folder; ``logger=none`` writes no logs at all."""

from __future__ import annotations

import pytest

from tests.integration.runner import cli_env, finish, hydra_main, running, tiny


@pytest.fixture(scope="module", autouse=True)
def offline_run(tmp_path_factory, mnist_root):
    """A real run with ``logger=default`` and nobody logged in: a fresh HOME (no ~/.netrc, no W&B settings),
    no W&B variables, stdin closed (a prompt would fail). Started first, checked last."""
    tmp = tmp_path_factory.mktemp("wandb")
    home = tmp / "home"
    home.mkdir()
    env = cli_env(HOME=str(home), WANDB_MODE=None, WANDB_API_KEY=None, WANDB_DIR=None, WANDB_SILENT=None,
                  WANDB_CONFIG_DIR=None, WANDB_CACHE_DIR=None, WANDB_DATA_DIR=None, NETRC=None,
                  XDG_CONFIG_HOME=None, XDG_CACHE_HOME=None)
    run_dir = tmp / "run"
    args = tiny(run_dir, mnist_root.data_dir, "trainer.max_steps=4", "trainer.log_every_n_steps=1")
    args = [a for a in args if a != "logger=csv"]
    with running(*args, "logger=default", cwd=tmp, env=env) as proc:
        yield run_dir, proc


def test_logger_none_writes_no_logs(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    args = [a for a in tiny(run_dir, mnist_root.data_dir, "trainer.max_steps=4") if a != "logger=csv"]
    result = hydra_main(*args, "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "logs").exists() and not (run_dir / "wandb").exists()
    assert not list(run_dir.rglob("*.csv")) and not list(run_dir.rglob("*.wandb"))
    assert not (tmp_path / "lightning_logs").exists() and not (run_dir / "lightning_logs").exists()
    assert "CSV logs" not in result.stdout and "W&B" not in result.stdout


@pytest.mark.slow
def test_wandb_without_credentials_runs_offline_and_says_how_to_sync(offline_run):
    run_dir, proc = offline_run
    result = finish(proc)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, sorted((run_dir / "wandb").glob("*")) or "no wandb/ in the run folder"
    run_id = (run_dir / "wandb" / "difgan-run-id").read_text().strip()  # what a resumed part continues
    assert runs[0].name.endswith(f"-{run_id}")
    files = list(runs[0].glob(f"run-{run_id}.wandb"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    data = files[0].read_bytes()
    assert b"train/d_loss" in data and b"dcgan_mnist" in data   # metrics and the run's config went in
    assert f"wandb sync {runs[0]}" in result.stdout
    for prompt in ("Create a W&B account", "Use an existing W&B account", "wandb login"):
        assert prompt not in result.stdout + result.stderr
    assert (run_dir / "logs" / "metrics.csv").is_file()          # CSV as well, always
