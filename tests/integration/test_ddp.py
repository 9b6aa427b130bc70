"""Real two-process DDP on CPU (gloo) through ``python -m difgan.run trainer=ddp``: Lightning relaunches the
command for rank 1 inside the same Hydra run folder; the ranks train on different data and end with identical
weights (gradients are averaged over both); only rank 0 writes the run's files."""

from __future__ import annotations

import json

import pytest
import torch

from tests.integration.runner import cli, cli_env, load, probe, tiny

PER_RANK_BATCH = 4
EPOCH = 4      # batches an epoch on each rank: 36 training images split in two, 18 // 4
BATCHES = 2 * EPOCH


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, mnist_root):
    """Two epochs of a tiny DCGAN on two CPU processes; every rank writes its final state (RankState)."""
    tmp = tmp_path_factory.mktemp("ddp")
    runs_dir = tmp / "runs"
    # No hydra.run.dir: the folder is the default ${paths.runs_dir}/<name>/<time>, so a rank that did not get
    # rank 0's folder from Lightning would make a second one.
    args = [a for a in tiny(tmp / "unused", mnist_root.data_dir, f"trainer.max_steps={2 * BATCHES}",
                            batch_size=PER_RANK_BATCH) if not a.startswith("hydra.run.dir=")]
    result = cli(*args, "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                 f"paths.runs_dir={runs_dir}", *probe("state", "RankState", out_dir=tmp / "ranks"),
                 cwd=tmp, env=cli_env(), timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    ranks = [load(tmp / "ranks" / f"rank{r}.pt") for r in (0, 1)]
    return result, ranks, runs_dir


@pytest.mark.slow
def test_two_rank_ddp_ends_with_identical_weights_and_one_run_folder(ddp_run):
    result, ranks, runs_dir = ddp_run
    assert "All distributed processes registered. Starting with 2 processes" in result.stdout + result.stderr
    images = BATCHES * PER_RANK_BATCH * 2  # images_seen counts both ranks' batches
    assert f"done: {images} images seen, {BATCHES} batches, global_step {2 * BATCHES}" in result.stdout
    assert result.stdout.count("done: ") == 1  # the summary is rank 0's alone

    assert [s["rank"] for s in ranks] == [0, 1] and all(s["world_size"] == 2 for s in ranks)
    # the ranks trained on different images (the sampler split the data) ...
    assert len(ranks[0]["batch_sums"]) == BATCHES and ranks[0]["batch_sums"] != ranks[1]["batch_sums"]
    # ... and drew different noise (z): each rank's RNG stream is its own
    for a, b in zip(ranks[0]["rng_states"], ranks[1]["rng_states"]):
        assert not torch.equal(a, b)
    # ... and still end with the same weights: generator, discriminator and the generator's EMA
    params = ranks[0]["parameters"]
    for prefix in ("_generator.", "_discriminator.", "ema.averaged."):
        assert any(n.startswith(prefix) for n in params), prefix
    for name in params:
        assert torch.equal(ranks[0]["state_dict"][name], ranks[1]["state_dict"][name]), name
    for key in ("global_step", "batches_seen", "images_seen"):
        assert ranks[0][key] == ranks[1][key]
    for r in ranks:
        assert r["images_seen"] == images

    # one run folder, written by rank 0: the checkpoint holds the (shared) weights
    folders = [p for p in runs_dir.glob("*/*") if p.is_dir()]
    assert len(folders) == 1, folders
    run_dir = folders[0]
    ckpt = load(run_dir / "checkpoints" / "last.ckpt")
    for name in params:
        assert torch.equal(ckpt["state_dict"][name], ranks[0]["state_dict"][name]), name
    assert ckpt["difgan"]["images_seen"] == images
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    hydra_logs = [f for f in files if f.endswith(".log")]  # Hydra's job logs: run.log, and rank 1's own
    assert set(hydra_logs) <= {"run.log", "train_ddp_process_1.log"}
    assert sorted(set(files) - set(hydra_logs)) == sorted([
        ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", ".lock", "config.yaml",
        "run.json",
        "checkpoints/last.ckpt", "logs/hparams.yaml", "logs/metrics.csv", "samples/final.png",
        "samples/latest.png"])
    command = json.loads((run_dir / "run.json").read_text())["command"]
    assert "hydra.job.name=train_ddp_process_1" not in command


@pytest.mark.slow
def test_ddp_reshuffles_the_data_every_epoch(ddp_run):
    """Lightning wraps EpochSeededSampler in a DistributedSamplerWrapper, which must forward set_epoch to it
    (lightning>=2.6.1 does, hence the pin), or every epoch would repeat epoch 0's order and split."""
    _, ranks, _ = ddp_run
    for rank in ranks:
        sums = rank["batch_sums"]
        assert len(sums) == BATCHES
        assert sums[:EPOCH] != sums[EPOCH:]


@pytest.mark.slow
def test_ddp_spawn_trains_two_cpu_processes_to_identical_weights(tmp_path, mnist_root):
    """``trainer=ddp_spawn`` (the strategy local sweeps use): Lightning starts the two ranks itself, in
    processes of its own (gloo on CPU), without relaunching the command; rank 0's final state comes back."""
    run_dir = tmp_path / "run"
    result = cli(*tiny(run_dir, mnist_root.data_dir, f"trainer.max_steps={2 * EPOCH}",
                       batch_size=PER_RANK_BATCH),
                 "trainer=ddp_spawn", "trainer.devices=2", "trainer.accelerator=cpu",
                 *probe("state", "RankState", out_dir=tmp_path / "ranks"), cwd=tmp_path, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    images = EPOCH * PER_RANK_BATCH * 2
    assert f"done: {images} images seen, {EPOCH} batches, global_step {2 * EPOCH}" in result.stdout
    ranks = [load(tmp_path / "ranks" / f"rank{r}.pt") for r in (0, 1)]
    assert [s["world_size"] for s in ranks] == [2, 2] and ranks[0]["batch_sums"] != ranks[1]["batch_sums"]
    for name in ranks[0]["parameters"]:
        assert torch.equal(ranks[0]["state_dict"][name], ranks[1]["state_dict"][name]), name
    ckpt = load(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["difgan"]["images_seen"] == images
    for name in ranks[0]["parameters"]:
        assert torch.equal(ckpt["state_dict"][name], ranks[0]["state_dict"][name]), name
