"""The discriminator task, discriminator guidance and feedback fine-tuning through their entry points, on a
tiny DDPM trained for a few steps on the fixture digits: train, report, guide, resume."""

from __future__ import annotations

import json

import pytest
import torch

from difgan.models.discriminator import load_discriminator
from tests.integration.runner import entry, load, one_line_error

TINY_DDPM = ["model.timesteps=20", "model.beta_end=0.5", "model.unet.channels=8",
             "model.unet.channel_mult=[1,2]", "model.warmup_kimg=0", "model.sampling.sampling_steps=3"]


def common(run_dir, data_dir):
    return ["data=mnist", f"paths.data_dir={data_dir}", "data.batch_size=8", "metrics=none", "logger=csv",
            "trainer.enable_progress_bar=false", "++trainer.enable_model_summary=false",
            "callbacks.samples.n=4",
            f"paths.cache_dir={run_dir.parent / 'cache'}", f"hydra.run.dir={run_dir}"]


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory, mnist_root):
    run_dir = tmp_path_factory.mktemp("guidance") / "ddpm"
    result = entry("difgan.run", "model=ddpm", *TINY_DDPM, "trainer.max_steps=3",
                   *common(run_dir, mnist_root.data_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, mnist_root.data_dir


def disc_args(ddpm_dir, run_dir, data_dir, *more):
    return ["task=train_discriminator", f"discriminator.diffusion_ckpt={ddpm_dir}", "discriminator.n_fake=16",
            "discriminator.batch_size=8", "discriminator.base_channels=8", "discriminator.depth=2",
            "discriminator.sample_options.sampling_steps=2", "discriminator.heldout=0.25",
            "discriminator.buckets=2",
            *common(run_dir, data_dir), *more]


@pytest.fixture(scope="module")
def disc_run(ddpm_run):
    ddpm_dir, data_dir = ddpm_run
    run_dir = ddpm_dir.parent / "disc"
    result = entry("difgan.run", *disc_args(ddpm_dir, run_dir, data_dir, "discriminator.epochs=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_train_discriminator_reports_per_bucket_and_resumes(ddpm_run, disc_run, tmp_path):
    ddpm_dir, data_dir = ddpm_run
    run_dir, result = disc_run
    table = json.loads((run_dir / "discriminator_metrics.json").read_text())["heldout"]
    assert [r["bucket"] for r in table] == ["all", "0", "1"] and table[0]["n"] == 8
    assert all(0 <= r["acc"] <= 1 and r["bce"] > 0 and 0 <= r["ece"] <= 1 for r in table if r["n"])
    ckpt = load(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["difgan"]["kind"] == "discriminator" and ckpt["epoch"] == 0
    assert (run_dir / "fakes.npz").is_file()
    rows = (run_dir / "logs" / "metrics.csv").read_text()
    assert "val/acc_t1" in rows and "val/ece" in rows

    # resume in the same folder for one more epoch: continues from last.ckpt on the stored fakes
    again = entry("difgan.run", *disc_args(ddpm_dir, run_dir, data_dir, "discriminator.epochs=2"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert load(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 1

    report = entry("difgan.evaluate", f"ckpt_path={run_dir}", f"out={tmp_path / 'd.json'}",
                   f"hydra.run.dir={tmp_path}")
    assert report.returncode == 0, report.stderr[-3000:]
    assert "bucket" in report.stdout
    assert json.loads((tmp_path / "d.json").read_text())["kind"] == "discriminator"

    bad = entry("difgan.run", *disc_args(ddpm_dir, tmp_path / "x", data_dir,
                                         "discriminator.t_sampling=cosine"))
    assert "discriminator.t_sampling" in one_line_error(bad)


def test_sample_with_a_discriminator_ensemble(ddpm_run, disc_run, tmp_path):
    ddpm_dir, _ = ddpm_run
    disc_dir, _ = disc_run
    d = load_discriminator(disc_dir)
    assert not any(p.requires_grad for p in d.parameters())
    out = tmp_path / "g.png"
    result = entry("difgan.sample", f"ckpt_path={ddpm_dir}", "n=4", f"out={out}", "sampling_steps=3",
                   f"guidance.discriminator=[{disc_dir},{disc_dir}]", "guidance.weight=2",
                   "guidance.ensemble=probabilities", "guidance.t_min=0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file() and "discriminator_guidance" in result.stdout
    bad = entry("difgan.sample", f"ckpt_path={ddpm_dir}", "n=4", f"out={out}",
                f"guidance.discriminator={disc_dir}", "guidance.ensemble=median")
    assert "guidance.ensemble" in one_line_error(bad)


def test_feedback_fine_tunes_from_the_ddpm_and_resumes(ddpm_run, tmp_path):
    # the default method through the CLI (every method: tests/unit/test_feedback_and_discriminators.py)
    ddpm_dir, data_dir = ddpm_run
    method = "noise_time"
    run_dir = tmp_path / method
    args = ["model=ddpm_feedback", *TINY_DDPM, "model.timesteps=20", f"model.pretrained={ddpm_dir}",
            f"model.feedback.method={method}", "model.feedback.warmup_epochs=0",
            "model.feedback.chain_steps=3",
            "model.feedback.backprop_steps=1", "model.feedback.base_channels=8", "model.feedback.depth=2",
            *common(run_dir, data_dir)]
    per_batch = 2  # optimizer steps per batch: D and DDPM
    first = entry("difgan.run", *args, f"trainer.max_steps={2 * per_batch}")  # 2 batches
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = load(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["difgan"]["batches_seen"] == 2 and len(ckpt["optimizer_states"]) == 2
    pre = load(ddpm_dir / "checkpoints" / "last.ckpt")["state_dict"]
    ema = {k[len("ema.averaged."):]: v for k, v in pre.items() if k.startswith("ema.averaged.")}
    now = {k[len("unet."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("unet.")}
    assert ema.keys() == now.keys()
    # started from the DDPM's EMA weights, then moved a little (lr 1e-5)
    assert any(not torch.equal(ema[k], now[k]) for k in now)
    assert max(float((ema[k] - now[k]).abs().max()) for k in now) < 1e-3
    again = entry("difgan.run", *args, f"trainer.max_steps={4 * per_batch}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert load(run_dir / "checkpoints" / "last.ckpt")["difgan"]["batches_seen"] == 4
