"""Resuming: a run killed with SIGKILL continues from its last checkpoint with its optimizer states, EMA and
counters; and a run resumed at an epoch boundary ends bit-for-bit where an uninterrupted run does (CPU)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from difgan.loggers import read_metrics
from tests.integration.runner import finish, hydra_main, load, probe, running, tiny

BATCH = 8          # mnist_root: 36 training images -> 4 batches an epoch (drop_last)
TOTAL_STEPS = 40   # optimizer steps; a DCGAN makes two per batch (D and G): 20 batches


@pytest.fixture(scope="module", autouse=True)
def killed_run(tmp_path_factory, mnist_root):
    """A real run with a checkpoint every batch, SIGKILLed as soon as its first checkpoint exists (a watcher
    thread does it while the module's in-process tests run). Yields (run folder, process, watcher)."""
    tmp = tmp_path_factory.mktemp("killed")
    run_dir = tmp / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    with running(*tiny(run_dir, mnist_root.data_dir, f"trainer.max_steps={TOTAL_STEPS}",
                       "callbacks.checkpoint.every_n_train_steps=2",  # every batch
                       "trainer.log_every_n_steps=1",
                       *probe("slow", "SlowDown", seconds=0.5)), cwd=tmp) as proc:
        def kill_at_first_checkpoint() -> None:
            deadline = time.monotonic() + 240
            while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.kill()  # SIGKILL: no teardown, no final checkpoint

        watcher = threading.Thread(target=kill_at_first_checkpoint, daemon=True)
        watcher.start()
        yield run_dir, proc, watcher


def _assert_same(a, b, what: str) -> None:
    """Exactly equal nested containers of tensors (state dicts, optimizer states)."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
        assert same, f"{what} differs" + (f" by up to {(a.double() - b.double()).abs().max():.3g}"
                                          if isinstance(b, torch.Tensor) and a.shape == b.shape else "")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), (what, sorted(set(a) ^ set(b))[:5])
        for k in a:
            _assert_same(a[k], b[k], f"{what}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{what}[{i}]")
    else:
        assert a == b, (what, a, b)


def _adam_steps(ckpt: dict) -> list[int]:
    """Adam's step count of every parameter, generator's optimizer then discriminator's."""
    return [int(s["step"]) for opt in ckpt["optimizer_states"] for s in opt["state"].values()]


@pytest.mark.slow
def test_resuming_at_an_epoch_boundary_or_mid_epoch_matches_an_uninterrupted_run(tmp_path, mnist_root):
    def train(name: str, *more: str) -> dict:
        result = hydra_main(*tiny(tmp_path / name, mnist_root.data_dir, *more))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "not resumable" not in result.stderr  # Lightning's warning for a mid-epoch restart
        return load(tmp_path / name / "checkpoints" / "last.ckpt")

    straight = train("straight", "trainer.max_epochs=2")
    first = train("first", "trainer.max_epochs=1")
    resumed = train("resumed", "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'first'}")
    # mid-epoch: a checkpoint written during training after 3 of the first epoch's 4 batches (what a killed
    # run leaves), continued for the rest of the two epochs
    train("mid", "trainer.max_steps=8", "callbacks.checkpoint.every_n_train_steps=6",
          "callbacks.checkpoint.keep_periodic=true")
    mid = load(tmp_path / "mid" / "checkpoints" / "epoch=0-step=6.ckpt")
    mid_resumed = train("mid_resumed", "trainer.max_epochs=2",
                        f"ckpt_path='{tmp_path / 'mid' / 'checkpoints' / 'epoch=0-step=6.ckpt'}'")

    assert first["global_step"] == 8 and first["difgan"]["batches_seen"] == 4  # one epoch of 4 batches
    assert mid["global_step"] == 6 and mid["difgan"]["batches_seen"] == 3
    assert straight["global_step"] == resumed["global_step"] == mid_resumed["global_step"] == 16
    for key in ("images_seen", "batches_seen"):
        assert straight["difgan"][key] == resumed["difgan"][key] == mid_resumed["difgan"][key]
    # generator, discriminator and the generator's EMA, BatchNorm statistics included; and the optimizers
    names = straight["state_dict"].keys()
    for prefix in ("_generator.", "_discriminator.", "ema.averaged."):
        assert any(k.startswith(prefix) for k in names), prefix
    for other, what in ((resumed, "epoch boundary"), (mid_resumed, "mid-epoch")):
        _assert_same(other["state_dict"], straight["state_dict"], f"{what}: state_dict")
        _assert_same(other["optimizer_states"], straight["optimizer_states"], f"{what}: optimizer_states")
    # the comparison means something: the second epoch changed the weights
    assert not torch.equal(first["state_dict"]["_generator.net.0.weight"],
                           straight["state_dict"]["_generator.net.0.weight"])


def test_last_checkpoint_holds_the_final_state_between_save_points(tmp_path, mnist_root):
    """A run that stops between two periodic saves (max_steps, max_kimg) still ends with its final state in
    last.ckpt (Lightning alone keeps the older one once any last.ckpt was written)."""
    result = hydra_main(*tiny(tmp_path / "run", mnist_root.data_dir, "trainer.max_steps=6",
                              "callbacks.checkpoint.every_n_train_steps=4"))
    assert result.returncode == 0, result.stderr[-3000:]
    final = load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert final["global_step"] == 6 and final["difgan"]["batches_seen"] == 3


@pytest.mark.slow
def test_killed_run_resumes_with_optimizer_ema_and_counters(tmp_path, mnist_root, killed_run):
    killed_dir, proc, watcher = killed_run
    watcher.join(timeout=300)
    result = finish(proc, timeout=60)
    assert result.returncode == -9, (result.returncode, result.stderr[-3000:])

    killed = load(killed_dir / "checkpoints" / "last.ckpt")  # the save is atomic: a whole checkpoint
    step = killed["global_step"]
    assert 2 <= step < TOTAL_STEPS and step % 2 == 0
    assert killed["difgan"]["batches_seen"] == step // 2
    assert killed["difgan"]["images_seen"] == step // 2 * BATCH
    assert set(_adam_steps(killed)) == {step // 2}

    resumed_dir = tmp_path / "resumed"
    result = hydra_main(*tiny(resumed_dir, mnist_root.data_dir, f"trainer.max_steps={TOTAL_STEPS}",
                              f"ckpt_path={killed_dir}", *probe("start", "StateAtStart",
                                                                path=tmp_path / "start.pt")))
    assert result.returncode == 0, result.stderr[-3000:]

    # What training resumed from is the killed run's checkpoint: raw and EMA weights, BatchNorm statistics,
    # both optimizers' states, counters.
    start = load(tmp_path / "start.pt")
    assert any(k.startswith("ema.averaged.") for k in killed["state_dict"])
    _assert_same(start["state_dict"], killed["state_dict"], "state_dict")
    _assert_same(start["optimizer_states"], killed["optimizer_states"], "optimizer_states")
    assert (start["global_step"], start["batches_seen"], start["images_seen"]) == (
        step, step // 2, step // 2 * BATCH)

    # ... and the counters went on from there instead of restarting.
    final = load(resumed_dir / "checkpoints" / "last.ckpt")
    assert final["global_step"] == TOTAL_STEPS
    assert final["difgan"]["batches_seen"] == TOTAL_STEPS // 2
    assert final["difgan"]["images_seen"] == TOTAL_STEPS // 2 * BATCH
    assert set(_adam_steps(final)) == {TOTAL_STEPS // 2}
    assert f"done: {TOTAL_STEPS // 2 * BATCH} images seen, {TOTAL_STEPS // 2} batches" in result.stdout


@pytest.mark.slow
def test_a_killed_run_resumed_in_its_folder_keeps_one_log_history(mnist_root, killed_run):
    """The requeued job: the same command in the same run folder (resume=auto). Its stale lock is taken over,
    and metrics.csv holds every logged step of both parts exactly once (Lightning's CSVLogger deleted the
    killed part's rows)."""
    killed_dir, proc, watcher = killed_run
    watcher.join(timeout=300)
    proc.wait(timeout=60)
    before = read_metrics(killed_dir)
    assert before and max(r["step"] for r in before) >= 0  # the killed part logged something
    result = hydra_main(*tiny(killed_dir, mnist_root.data_dir, f"trainer.max_steps={TOTAL_STEPS}",
                              "trainer.log_every_n_steps=1", "callbacks.checkpoint.every_n_train_steps=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "taking over the stale lock" in result.stderr
    rows = [r for r in read_metrics(killed_dir) if "train/d_loss" in r]
    steps = [int(r["step"]) for r in rows]
    assert sorted(steps) == list(range(TOTAL_STEPS // 2)), steps   # batches 1..20 log steps 0..19, once each
    first_rows = [r for r in before if "train/d_loss" in r]
    kept = {int(r["step"]): r["train/d_loss"] for r in rows}
    assert any(kept[int(r["step"])] == r["train/d_loss"] for r in first_rows)  # the killed part's rows stayed
