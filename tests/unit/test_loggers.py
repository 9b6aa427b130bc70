"""Logs are never deleted (CSV appends across resumed parts), W&B continues the same run id, and
``logger.wandb.mode=online`` without credentials runs offline with a one-line warning (issue 12)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from difgan.loggers import AppendingCSVLogger, build_loggers, read_metrics, wandb_mode


@pytest.fixture
def logged_out(tmp_path, monkeypatch):
    """Nobody logged in to W&B: no key, no ~/.netrc, no WANDB_MODE."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_online_without_credentials_runs_offline_and_says_how_to_log_in(logged_out, capsys):
    assert wandb_mode("online") == "offline"
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("warning: logger.wandb.mode=online but no W&B credentials")
    assert "wandb login" in lines[0] and "wandb sync" in lines[0]
    assert wandb_mode("auto") == "offline" and wandb_mode("offline") == "offline"


def test_online_with_credentials_stays_online(logged_out, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("online") == "online"


def test_a_resumed_part_appends_to_the_csv_and_keeps_every_row(tmp_path):
    first = AppendingCSVLogger(save_dir=str(tmp_path), name="logs", version="")
    for step in range(3):
        first.log_metrics({"train/d_loss": float(step)}, step=step)
    first.save()
    # the resumed part: a new logger on the same folder, logging a key the first part never did
    second = AppendingCSVLogger(save_dir=str(tmp_path), name="logs", version="")
    second.log_metrics({"train/d_loss": 3.0}, step=3)
    second.log_metrics({"train/g_loss": 7.0, "train/d_loss": 4.0}, step=4)
    second.save()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["train/d_loss"] for r in rows] == [0, 1, 2, 3, 4] and rows[-1]["train/g_loss"] == 7


def test_rows_logged_after_the_resumed_checkpoint_are_set_aside_not_deleted(tmp_path):
    cfg = OmegaConf.create({"csv": True, "wandb": {"enabled": False}})
    (logger,) = build_loggers(cfg, tmp_path, "run", {})
    for step in range(6):
        logger.log_metrics({"train/d_loss": float(step)}, step=step)
    logger.save()
    # killed after logging step 5; its last checkpoint was after 4 batches (steps 0..3): 4 and 5 are redone
    build_loggers(cfg, tmp_path, "run", {}, resume_step=4)
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2, 3]
    (aside,) = (tmp_path / "logs").glob("metrics-superseded-*.csv")
    assert aside.read_text().splitlines()[1:] == ["4,4.0", "5,5.0"]


def test_wandb_resumes_the_same_run_id(tmp_path, logged_out):
    """A resumed part of a run folder asks W&B to resume the run folder's id (tests/integration/test_wandb.py
    checks that the offline run files carry that id)."""
    cfg = OmegaConf.create({"csv": False, "wandb": {"enabled": True, "mode": "offline", "project": "t"}})
    (first,) = build_loggers(cfg, tmp_path, "run", {})
    run_id = (tmp_path / "wandb" / "difgan-run-id").read_text().strip()
    (second,) = build_loggers(cfg, tmp_path, "run", {})  # the requeued job, same run folder
    for logger in (first, second):
        assert logger._wandb_init["id"] == run_id and logger._wandb_init["resume"] == "allow"
    (elsewhere,) = build_loggers(cfg, tmp_path / "other", "run", {})
    assert elsewhere._wandb_init["id"] != run_id
