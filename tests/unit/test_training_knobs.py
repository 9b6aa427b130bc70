"""Training knobs whose arithmetic is easy to get subtly wrong: the EMA half-life and its ramp-up, the
max_kimg budget, and instance noise (with its annealing) and label smoothing reaching the D step."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from difgan.callbacks.budget import KimgBudget
from difgan.models.ema import EMA, decay_for_batch
from difgan.models.gan import DCGAN

BATCH = 8


def test_half_life_halves_the_weight_of_the_past_after_that_many_images():
    # one batch of 10 images with a 1-kimg half-life: 0.5 ** (10 / 1000); 100 such batches: exactly 0.5
    d = decay_for_batch(10, half_life_kimg=1.0, decay=None)
    assert d == pytest.approx(0.5 ** 0.01, rel=1e-12) and d**100 == pytest.approx(0.5, rel=1e-12)
    # the same images in batches of another size give the same total decay (batch- and GPU-independent)
    assert decay_for_batch(40, 1.0, None) == pytest.approx(d**4, rel=1e-12)
    assert decay_for_batch(128, None, 0.9999) == 0.9999  # a fixed per-step decay (paper configs)
    with pytest.raises(ValueError):
        decay_for_batch(10, None, None)


def test_rampup_caps_the_half_life_at_a_fraction_of_the_images_seen():
    # StyleGAN2: half-life min(10 kimg, 0.05 * images_seen)
    assert decay_for_batch(32, 10.0, None, images_seen=20_000, rampup=0.05) == pytest.approx(
        0.5 ** (32 / 1000))
    assert decay_for_batch(32, 10.0, None, images_seen=1_000_000, rampup=0.05) == pytest.approx(
        0.5 ** (32 / 10_000))
    assert decay_for_batch(32, 10.0, None, images_seen=0, rampup=0.05) == 0.0  # follows the net at first


def test_ema_update_blends_parameters_copies_buffers_and_waits_for_start_kimg():
    net = nn.BatchNorm1d(3)
    ema = EMA(net, half_life_kimg=0.01, start_kimg=0.02)  # half-life 10 images
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.running_mean.fill_(7.0)
    ema.update(net, batch_images=10, images_seen=10)  # before start_kimg: a copy
    assert torch.equal(ema.averaged.weight, net.weight)
    with torch.no_grad():
        net.weight.fill_(5.0)
    ema.update(net, batch_images=10, images_seen=20)  # one half-life: halfway from 3 to 5
    assert torch.allclose(ema.averaged.weight, torch.full((3,), 4.0))
    assert torch.equal(ema.averaged.running_mean, net.running_mean)  # buffers copied, not averaged
    assert not ema.averaged.training and not ema.averaged.weight.requires_grad


def _digits(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.zeros(n, dtype=torch.long))


def _fit(model, n_images: int, callbacks=(), max_epochs: int = 1):
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=list(callbacks))
    trainer.fit(model, DataLoader(_digits(n_images), batch_size=BATCH))
    return trainer


def _tiny_dcgan(**kwargs) -> DCGAN:
    torch.manual_seed(0)
    return DCGAN((1, 28, 28), base_channels=4, latent_dim=8, **kwargs)


def test_max_kimg_stops_at_the_first_batch_that_reaches_the_budget():
    model = _tiny_dcgan()
    trainer = _fit(model, 10 * BATCH, [KimgBudget(0.02)], max_epochs=5)  # 20 images: the 3rd batch (24)
    assert model.images_seen == 24 and model.batches_seen == 3 and trainer.global_step == 6


def test_instance_noise_anneals_on_every_discriminator_input_and_smoothing_sets_the_real_target():
    model = _tiny_dcgan(instance_noise=0.5, instance_noise_kimg=0.032, label_smoothing=0.1)
    inputs, losses = [], []
    model.discriminator.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach().clone()))
    d_loss = model.d_loss

    def recording_d_loss(real_logits, fake_logits):
        loss = d_loss(real_logits, fake_logits)
        losses.append((real_logits.detach(), fake_logits.detach(), loss.detach()))
        return loss

    model.d_loss = recording_d_loss
    data = _digits(4 * BATCH)
    reals = iter(x for x, _ in DataLoader(data, batch_size=BATCH))
    real_batches = [next(reals) for _ in range(4)]
    _fit(model, 4 * BATCH)
    assert len(inputs) == 4 * 3 and len(losses) == 4  # per batch: D(real), D(fake), and the G step's D(fake)
    for i, real in enumerate(real_batches):
        seen = (i + 1) * BATCH  # the batch being trained counts: std = 0.5 * (1 - seen / 32)
        expected = 0.5 * max(0.0, 1 - seen / 32)
        residual = inputs[3 * i] - real
        assert residual.std().item() == pytest.approx(expected, abs=0.02 + 0.02 * expected), i
        # the fake batch, seen by the D step and again by the G step, gets its own noise each time
        between = inputs[3 * i + 2] - inputs[3 * i + 1]
        assert between.std().item() == pytest.approx(expected * 2**0.5, abs=0.03 + 0.03 * expected), i
        real_logits, fake_logits, loss = losses[i]
        smoothed = (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, 0.9))
                    + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        assert torch.allclose(loss, smoothed, atol=1e-6)
    assert torch.equal(inputs[9], real_batches[3])  # fully annealed: the discriminator sees the data itself
