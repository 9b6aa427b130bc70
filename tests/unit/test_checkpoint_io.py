"""Checkpoint files survive full disks and kills, never hold NaN/inf weights, and a run folder whose last.ckpt
is unreadable resumes from its newest readable checkpoint (issue 12)."""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from difgan.callbacks import checkpoint as ckpt_io
from difgan.callbacks.checkpoint import AtomicCheckpointIO, leftover_temporaries
from difgan.errors import CheckpointError
from difgan.models.gan import DCGAN
from difgan.resume import resume_checkpoint


def _model() -> DCGAN:
    torch.manual_seed(0)
    return DCGAN((1, 28, 28), base_channels=4, latent_dim=8)


def _checkpoint(model: DCGAN, config: dict | None = None, step: int = 2) -> dict:
    return {"state_dict": {k: v.clone() for k, v in model.state_dict().items()}, "global_step": step,
            "difgan": {"config": config or {"model": {"base_channels": 4}}, "images_seen": 8 * step}}


def _same_file_content(path: Path, expected: dict) -> None:
    got = torch.load(path, weights_only=True)
    assert got["global_step"] == expected["global_step"]
    for k, v in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][k], v), k


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    good = _checkpoint(_model(), step=2)
    io.save_checkpoint(good, path)

    def disk_full(obj, f):  # half a checkpoint gets out, then the filesystem is full
        f.write(b"PK\x03\x04" + b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_io, "_serialize", disk_full)
    newer = _checkpoint(_model(), step=4)
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint there is"):
        io.save_checkpoint(newer, path)
    _same_file_content(path, good)                          # the earlier checkpoint, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no partial file left behind


def _save_until_killed(path: str, started: str) -> None:
    """Child process: starts saving a checkpoint, writes half of it, and hangs there (to be SIGKILLed)."""

    def half_then_hang(obj, f):
        f.write(b"PK\x03\x04" + b"\1" * 65536)
        f.flush()
        Path(started).touch()
        time.sleep(60)

    ckpt_io._serialize = half_then_hang
    AtomicCheckpointIO().save_checkpoint(_checkpoint(_model(), step=4), path)


def test_a_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    good = _checkpoint(_model(), step=2)
    AtomicCheckpointIO().save_checkpoint(good, path)
    started = tmp_path / "started"
    child = multiprocessing.get_context("fork").Process(target=_save_until_killed,
                                                        args=(str(path), str(started)))
    child.start()
    deadline = time.monotonic() + 30
    while not started.exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started.exists(), "the child never started saving"
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL

    _same_file_content(path, good)                 # last.ckpt is the previous checkpoint, whole
    leftovers = leftover_temporaries(path.parent)  # the killed save's half file is a temporary, not a ckpt
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 65536
    assert not leftovers[0].name.endswith(".ckpt")
    newer = _checkpoint(_model(), step=6)
    AtomicCheckpointIO().save_checkpoint(newer, path)  # the next save cleans it up
    _same_file_content(path, newer)
    assert leftover_temporaries(path.parent) == []


def test_non_finite_weights_never_replace_a_finite_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    model = _model()
    good = _checkpoint(model, step=2)
    AtomicCheckpointIO().save_checkpoint(good, path)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var[0] = float("inf")  # losses can stay finite while a BN statistic blew up
    with pytest.warns(RuntimeWarning, match=r"not saving checkpoint .*non-finite values in .*running_var"):
        AtomicCheckpointIO().save_checkpoint(_checkpoint(model, step=4), path)
    _same_file_content(path, good)
    fresh = tmp_path / "fresh.ckpt"
    with pytest.warns(RuntimeWarning, match="non-finite"):
        AtomicCheckpointIO().save_checkpoint(_checkpoint(model, step=4), fresh)
    assert not fresh.exists()


def test_an_unreadable_last_checkpoint_resumes_from_the_newest_readable_one(tmp_path, capsys):
    model = _model()
    config = {"model": {"base_channels": 4}}
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint(_checkpoint(model, config, step=2), folder / "epoch=0-step=2.ckpt")
    io.save_checkpoint(_checkpoint(model, config, step=4), folder / "epoch=1-step=4.ckpt")
    os.utime(folder / "epoch=0-step=2.ckpt", (1, 1))  # older
    (folder / "last.ckpt").write_bytes(b"")            # what a kill under the old writer left
    cfg = OmegaConf.create({"resume": "auto", "ckpt_path": None})
    path = resume_checkpoint(cfg, run_dir, model, config)
    assert Path(path) == folder / "epoch=1-step=4.ckpt"
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "last.ckpt is unreadable" in warning[0]
    assert "epoch=1-step=4.ckpt" in warning[0]

    # nothing readable at all: one line saying what to do
    for p in folder.glob("epoch=*"):
        p.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no readable checkpoint .* resume=never"):
        resume_checkpoint(cfg, run_dir, model, config)
