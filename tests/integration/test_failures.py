"""Runs that go wrong: a non-finite loss stops training with one line naming the batch and keeps the last good
checkpoint; unreadable, foreign, unsafe or mismatched checkpoints given as ``ckpt_path`` stop the run with one
line, and nothing in them is unpickled beyond tensors and plain containers (``weights_only=True``)."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from tests.integration.runner import finish, hydra_main, load, one_line_error, probe, running, tiny


class Payload:
    """Unpickling this creates a folder: proof that a file was unpickled with full pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory, mnist_root) -> Path:
    """A real checkpoint of the tiny DCGAN run (two batches)."""
    run_dir = tmp_path_factory.mktemp("good") / "run"
    result = hydra_main(*tiny(run_dir, mnist_root.data_dir, "trainer.max_steps=4"))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module", autouse=True)
def truncated_cli(tmp_path_factory, mnist_root, good_checkpoint):
    """A real process resuming from a truncated copy of a checkpoint: started first, checked last."""
    tmp = tmp_path_factory.mktemp("truncated")
    broken = tmp / "truncated.ckpt"
    data = good_checkpoint.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with running(*tiny(tmp / "run", mnist_root.data_dir, f"ckpt_path={broken}"), cwd=tmp) as proc:
        yield broken, proc


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    # 4 batches an epoch; a NaN weight before batch 7 (the second epoch's third) makes its D loss NaN.
    result = hydra_main(*tiny(run_dir, mnist_root.data_dir, "trainer.max_epochs=5",
                              "callbacks.checkpoint.keep_periodic=true",
                              *probe("nan", "PoisonWeights", at_batch=7)))
    line = one_line_error(result)
    assert line == ("error: non-finite loss: d_loss=nan at batch 7 (global_step 12); training stopped, "
                    "the last good checkpoint is kept")

    # last.ckpt is the end of the first epoch (the last save point before the failure), all of it finite
    last = load(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 8 and last["difgan"]["batches_seen"] == 4
    for name, value in last["state_dict"].items():
        assert not value.is_floating_point() or torch.isfinite(value).all(), name
    # nothing was written after the failure (no end-of-training checkpoint or sample grid)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch=0-step=8.ckpt", "last.ckpt"]
    assert not (run_dir / "samples" / "final.png").exists()
    # every checkpoint the run wrote loads without unpickling anything but tensors and plain containers
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        assert load(path)["difgan"]["images_seen"] == 32


def _foreign(tmp_path: Path, good: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """Files that are not checkpoints this run can resume from -> (path, what the error line must say)."""
    files = {}
    p = tmp_path / "plain_dict.ckpt"
    torch.save({"weights": torch.ones(3)}, p)
    files["plain_dict"] = (p, "is not a difgan checkpoint")
    p = tmp_path / "object.pkl"
    p.write_bytes(pickle.dumps(Payload(marker)))
    files["pickled_object"] = (p, "cannot read checkpoint")
    p = tmp_path / "with_object.ckpt"
    ckpt = torch.load(good, weights_only=True)
    ckpt["difgan"]["extra"] = Payload(marker)
    torch.save(ckpt, p)
    files["checkpoint_with_object"] = (p, "cannot read checkpoint")
    p = tmp_path / "empty.ckpt"
    p.write_bytes(b"")
    files["empty"] = (p, "cannot read checkpoint")
    p = tmp_path / "text.ckpt"
    p.write_text("not a checkpoint\n")
    files["text"] = (p, "cannot read checkpoint")
    p = tmp_path / "wider_model" / "checkpoints" / "last.ckpt"   # a run folder, of a different model size
    p.parent.mkdir(parents=True)
    shutil.copy(good, p)
    files["other_model"] = (p.parent.parent, "does not fit this run's model")
    return files


CASES = ["plain_dict", "pickled_object", "checkpoint_with_object", "empty", "text", "other_model"]


@pytest.mark.parametrize("case", CASES)
def test_bad_checkpoint_is_one_line_and_nothing_is_unpickled(tmp_path, mnist_root, good_checkpoint, case):
    marker = tmp_path / "unpickled"
    path, expected = _foreign(tmp_path, good_checkpoint, marker)[case]
    assert pickle.loads(pickle.dumps(Payload(tmp_path / "probe"))) is None and (tmp_path / "probe").is_dir()
    width = "model.base_channels=16" if case == "other_model" else "model.base_channels=8"
    result = hydra_main(*tiny(tmp_path / "run", mnist_root.data_dir, f"ckpt_path={path}", width))
    line = one_line_error(result)
    assert expected in line, line
    assert not marker.exists(), "the checkpoint was unpickled beyond weights_only"
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training


@pytest.mark.slow
def test_truncated_checkpoint_is_one_line_through_the_real_cli(truncated_cli):
    broken, proc = truncated_cli
    line = one_line_error(finish(proc))
    assert line.startswith(f"error: cannot read checkpoint {broken}: corrupt, truncated"), line
    assert not (broken.parent / "run" / "checkpoints").exists()
