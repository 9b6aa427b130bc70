"""``python -m difgan.run model=diffusion_gan data=stl10`` runs end to end on the STL10 on-disk fixture (tiny
widths), logs p, T and r_d, and a run resumed from its checkpoint ends bit-for-bit where an uninterrupted run
does: weights, optimizers, EMA and Diffusion-GAN's adaptive p and T (persistent buffers) and StyleGAN2's
path-length mean. Then the checkpoint samples through ``difgan.sample`` in every output format."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from tests.integration.runner import entry, hydra_main, load

TINY = ["model=diffusion_gan", "data=stl10", "model.latent_dim=8", "model.w_dim=8", "model.mapping_layers=1",
        "model.channel_base=128", "model.channel_max=8", "model.mbstd_group_size=2", "model.r1_interval=2",
        "model.pl_interval=2", "model.diffusion.ada_interval=1", "model.diffusion.ada_kimg=0.02",
        "model.diffusion.t_max=50", "metrics=none", "logger=csv", "trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false", "++trainer.log_every_n_steps=1", "callbacks.samples.n=4"]


@pytest.mark.slow
def test_diffusion_gan_on_stl10_runs_logs_and_resumes_bit_for_bit(tmp_path, stl10_root):
    def train(name: str, *more: str) -> dict:
        result = hydra_main(*TINY, f"paths.data_dir={stl10_root.data_dir}", *stl10_root.overrides,
                            f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / name}",
                            *more)
        assert result.returncode == 0, result.stderr[-3000:]
        return load(tmp_path / name / "checkpoints" / "last.ckpt")

    # epochs, not max_steps: lazy regularisers step the optimizers too, so global_step runs ahead of batches
    first = train("first", "trainer.max_epochs=1")  # 39 training images, batch 8: 5 batches an epoch
    assert first["difgan"]["batches_seen"] == 5
    state = first["state_dict"]
    assert float(state["augment.p"]) > 0 and int(state["augment.T"]) > 10  # the fixture's D grows T at once
    with open(tmp_path / "first" / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"diffusion/p", "diffusion/T", "diffusion/r_d", "train/r1", "train/pl"} <= set(rows[0])
    assert any(r["diffusion/T"] for r in rows)

    straight = train("straight", "trainer.max_epochs=2")
    resumed = train("resumed", "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'first'}")
    for key in ("augment.p", "augment.T", "augment.r_d", "pl_mean"):
        assert torch.equal(resumed["state_dict"][key], straight["state_dict"][key]), key
        assert resumed["state_dict"][key].dtype == straight["state_dict"][key].dtype
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    # the comparison means something: the second epoch trained and adapted further
    assert int(first["state_dict"]["augment.num_updates"]) == 5
    assert int(straight["state_dict"]["augment.num_updates"]) == 10
    key = "_generator.mapping.layers.0.weight"
    assert not torch.equal(first["state_dict"][key], straight["state_dict"][key])

    # sampling from the checkpoint, in the three formats other tools read
    out = tmp_path / "samples"
    for fmt, path in (("npz", out / "s.npz"), ("folder", out / "imgs"), ("png", out / "grid.png")):
        result = entry("difgan.sample", f"ckpt_path={tmp_path / 'straight'}", "n=5", f"format={fmt}",
                       f"out={path}", "device=cpu")
        assert result.returncode == 0, result.stderr[-3000:]
    arr = np.load(out / "s.npz")["arr_0"]
    assert arr.shape == (5, 64, 64, 3) and arr.dtype == np.uint8
    assert len(list((out / "imgs").glob("*.png"))) == 5 and (out / "grid.png").stat().st_size > 0
