"""One writer per run folder, checkpoints written atomically by real runs, and bad command-line values that
must stop with one line naming the key (issue 12)."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch

from difgan.callbacks import checkpoint as ckpt_io
from difgan.runlock import RunLock
from tests.integration.runner import hydra_main, load, one_line_error, tiny


def test_a_second_writer_is_refused_with_one_line_naming_the_holder(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    with RunLock(run_dir):  # another run is writing there
        result = hydra_main(*tiny(run_dir, mnist_root.data_dir, "trainer.max_steps=2"))
    line = one_line_error(result)
    assert "is in use by another run" in line and f"host {socket.gethostname()}, pid {os.getpid()}" in line
    assert not (run_dir / "checkpoints").exists()


def test_a_stale_lock_is_taken_over_and_saves_go_through_the_atomic_writer(tmp_path, mnist_root, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text(json.dumps({"host": "node7", "pid": 4242, "started": 0}))  # killed holder
    written = []
    serialize = ckpt_io._serialize
    monkeypatch.setattr(ckpt_io, "_serialize", lambda obj, f: (
        written.append(os.readlink(f"/proc/self/fd/{f.fileno()}")), serialize(obj, f)))
    result = hydra_main(*tiny(run_dir, mnist_root.data_dir, "trainer.max_steps=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    stale = [line for line in result.stderr.splitlines() if "stale lock" in line]
    assert len(stale) == 1 and "host node7, pid 4242" in stale[0]
    assert (run_dir / ".lock").read_text() == ""  # released
    folder = run_dir / "checkpoints"
    assert written and all(os.path.dirname(p) == str(folder) and p.endswith(".tmp") for p in written)
    assert load(folder / "last.ckpt")["global_step"] == 2 and sorted(os.listdir(folder)) == ["last.ckpt"]


@pytest.mark.parametrize(("override", "key", "says"), [
    ("seed=-1", "seed", "impossible value, got -1 (a seed is an integer in [0, 4294967295]"),
    (f"seed={2**32}", "seed", "[0, 4294967295]"),
    ("trainer.max_steps=abc", "trainer.max_steps", "'abc'"),
    ("trainer.max_epochs=1.5", "trainer.max_epochs", "1.5"),
    ("trainer=gpu", "trainer.accelerator", "use trainer=cpu"),
])
def test_bad_values_stop_with_one_line_naming_the_key(tmp_path, mnist_root, override, key, says):
    if override == "trainer=gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = one_line_error(hydra_main(*tiny(tmp_path / "run", mnist_root.data_dir, override)))
    assert line.startswith(f"error: config error: {key}: ") and says in line, line
