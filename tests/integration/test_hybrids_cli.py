"""The hybrids and seed 003's GAN baselines end to end through the real entry points (in this process):
each trains a couple of batches with ``python -m difgan.run``; DifGAN and DDGAN sample and interpolate
from their checkpoints and write the trajectory strip; and a DDGAN run resumed at an epoch boundary ends
bit-for-bit where an uninterrupted one does (weights, EMA, both optimizers with their decayed learning
rates, counters), with lazy R1 and cosine lr decay on. (The final evaluation of a hybrid, metrics.json with
its sampling protocol, is what experiment=digits_budget runs; see experiments/digits_budget.)"""

from __future__ import annotations

import pytest
import torch

from tests.integration.runner import entry, hydra_main, load, tiny
from tests.integration.test_resume import _assert_same

HYBRID = ["model.channels=4", "model.d_channels=4", "model.steps=2"]
TINY = {
    "gan": ["model.g_hidden=[16]", "model.d_hidden=[16]", "model.latent_dim=8"],
    "gan_highdim": ["model.g_hidden=[16]", "model.d_hidden=[16]"],
    # the difgan_matched config itself (real_noising: matched), so the named variant is exercised
    "difgan_matched": [*HYBRID, "model.weights_g=increasing", "model.r1_gamma=0.1", "model.r1_interval=2"],
    "ddgan": [*HYBRID, "model.latent_dim=4", "model.r1_interval=2", "model.lr_decay_kimg=0.1"],
}


def _run(run_dir, data_dir, model, *more):
    overrides = [o for o in tiny(run_dir, data_dir, *more) if not o.startswith("model.")]
    overrides[overrides.index("model=dcgan")] = f"model={model}"
    result = hydra_main(*overrides, *TINY[model])
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("model", ["gan", "gan_highdim"])
def test_mlp_gans_train_through_the_cli(tmp_path, mnist_root, model):
    _run(tmp_path / "run", mnist_root.data_dir, model, "trainer.max_steps=4")
    ckpt = load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["difgan"]["batches_seen"] == 2
    z_dim = ckpt["state_dict"]["_generator.net.0.weight"].shape[1]
    assert z_dim == (8 if model == "gan" else 28 * 28)  # gan_highdim: z of the image's dimension


def _sample_and_interpolate(run_dir, tmp_path):
    out = tmp_path / "s.png"
    result = entry("difgan.sample", f"ckpt_path={run_dir}", "n=4", f"out={out}")
    assert result.returncode == 0 and out.stat().st_size > 100, result.stderr[-3000:]
    result = entry("difgan.interpolate", f"ckpt_path={run_dir}", "rows=1", "steps=3", f"out={tmp_path}",
                   f"hydra.run.dir={tmp_path / 'i'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "interpolation_noise.png").is_file()  # image-shaped noise: interpolated in x_T
    assert (run_dir / "samples" / "trajectory.png").stat().st_size > 100


def test_difgan_trains_samples_interpolates(tmp_path, mnist_root):
    run_dir = tmp_path / "run"
    _run(run_dir, mnist_root.data_dir, "difgan_matched", "trainer.max_steps=4",
         "callbacks.samples.trajectory_rows=2")
    ckpt = load(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["difgan"]["batches_seen"] == 2
    assert ckpt["difgan"]["config"]["model"]["real_noising"] == "matched"
    assert any(k.startswith("ema.averaged.") for k in ckpt["state_dict"])
    _sample_and_interpolate(run_dir, tmp_path)


def test_ddgan_resumed_at_an_epoch_boundary_matches_an_uninterrupted_run(tmp_path, mnist_root):
    def train(name: str, *more: str) -> dict:
        _run(tmp_path / name, mnist_root.data_dir, "ddgan", *more)
        return load(tmp_path / name / "checkpoints" / "last.ckpt")

    straight = train("straight", "trainer.max_epochs=2", "callbacks.samples.trajectory_rows=2")
    first = train("first", "trainer.max_epochs=1")
    resumed = train("resumed", "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'first'}")
    assert straight["difgan"]["batches_seen"] == resumed["difgan"]["batches_seen"] == 8
    names = straight["state_dict"].keys()
    for prefix in ("_generator.", "_discriminator.", "ema.averaged."):
        assert any(k.startswith(prefix) for k in names), prefix
    _assert_same(resumed["state_dict"], straight["state_dict"], "state_dict")
    _assert_same(resumed["optimizer_states"], straight["optimizer_states"], "optimizer_states")
    groups = straight["optimizer_states"][0]["param_groups"][0]
    assert groups["lr"] < groups["initial_lr"]  # the cosine decay ran (and resumed exactly)
    key = "_generator.backbone.conv_out.weight"
    assert not torch.equal(first["state_dict"][key], straight["state_dict"][key])
    _sample_and_interpolate(tmp_path / "straight", tmp_path)
