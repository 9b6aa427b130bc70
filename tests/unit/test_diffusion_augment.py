"""Diffusion-GAN's augmentation: the forward process at a fixed t, the t distributions, the adaptive T rule
and its limits; and the Diffusion-GAN models on the GAN loop (switched off, diffusion_dcgan is dcgan bit for
bit)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from difgan.diffusion.augment import DiffusionAugment
from difgan.errors import ConfigError
from difgan.models.diffusion_gan import DiffusionDCGAN, DiffusionStyleGAN2
from difgan.models.gan import DCGAN

BATCH, N_BATCHES = 8, 6


def test_augmented_reals_at_a_fixed_t_have_the_forward_process_mean_and_variance():
    aug = DiffusionAugment(t_min=50, t_max=100, noise_sd=0.5)
    assert int(aug.T) == 50
    x = torch.full((20000, 1, 2, 2), 0.8)
    t = torch.full((20000,), 30)
    xt = aug.diffuse(x, t)
    betas = torch.linspace(1e-4, 0.02, 50, dtype=torch.float64)  # linear, spread over the current T = 50
    abar = torch.prod(1 - betas[:30]).item()
    assert xt.mean().item() == pytest.approx(abar**0.5 * 0.8, abs=0.005)
    assert xt.var().item() == pytest.approx(0.25 * (1 - abar), rel=0.03)
    assert torch.equal(aug.diffuse(x[:4], torch.zeros(4, dtype=torch.long)), x[:4])  # t = 0: clean
    # the noisiest level is always t = T, whatever T is
    aug.T.fill_(80)
    assert aug.schedule().num_timesteps == 80


def test_priority_sampling_frequencies_are_proportional_to_t():
    aug = DiffusionAugment(t_min=9, t_max=9, t_sampling="priority")
    g = torch.Generator().manual_seed(0)
    n = 45000
    counts = torch.bincount(aug.sample_t(n, torch.device("cpu"), g), minlength=10).double()
    expected = torch.arange(10, dtype=torch.float64) / 45 * n
    assert counts[0] == 0
    chi2 = ((counts[1:] - expected[1:]) ** 2 / expected[1:]).sum().item()
    assert chi2 < 21.67  # chi-square, 8 degrees of freedom, p = 0.01
    uniform = DiffusionAugment(t_min=9, t_max=9, t_sampling="uniform")
    counts = torch.bincount(uniform.sample_t(n, torch.device("cpu"), g), minlength=10).double()
    chi2 = ((counts - n / 10) ** 2 / (n / 10)).sum().item()
    assert counts[0] > 0 and chi2 < 21.67


def test_adaptive_rule_raises_T_when_D_is_over_confident_on_reals_and_lowers_it_otherwise():
    aug = DiffusionAugment(t_min=10, t_max=1000, d_target=0.6, ada_interval=4, ada_kimg=1.0)
    confident = torch.full((8,), 3.0)  # every real called real: r_d = 1 > 0.6
    for _ in range(3):
        assert not aug.observe(confident, 8)
    assert aug.observe(confident, 8)
    assert float(aug.r_d) == 1.0
    assert float(aug.p) == pytest.approx(32 / 1000)  # 4 batches of 8 over ada_kimg = 1
    assert int(aug.T) == round(10 + 0.032 * 990)
    unsure = torch.tensor([1.0, -1.0] * 4)  # r_d = 0 < 0.6: less noise
    for _ in range(4):
        aug.observe(unsure, 8)
    assert float(aug.r_d) == 0.0 and float(aug.p) == pytest.approx(0.0, abs=1e-12) and int(aug.T) == 10


def test_T_stays_within_t_min_and_t_max():
    aug = DiffusionAugment(t_min=10, t_max=50, ada_interval=1, ada_kimg=0.001)
    for _ in range(5):
        aug.observe(torch.full((4,), -1.0), 4)  # r_d = -1: p pushed below 0
    assert float(aug.p) == 0.0 and int(aug.T) == 10
    for _ in range(5):
        aug.observe(torch.full((4,), 1.0), 4)  # p pushed above 1
    assert float(aug.p) == 1.0 and int(aug.T) == 50
    t = aug.sample_t(1000, torch.device("cpu"))
    assert int(t.max()) <= 50 and int(t.min()) >= 0


def test_adaptive_state_is_in_the_state_dict():
    aug = DiffusionAugment(ada_interval=1, ada_kimg=0.01)
    aug.observe(torch.ones(4), 4)
    other = DiffusionAugment()
    other.load_state_dict(aug.state_dict())
    assert float(other.p) == float(aug.p) > 0 and int(other.T) == int(aug.T) > 10


def _data():
    g = torch.Generator().manual_seed(5)
    return TensorDataset(torch.rand(BATCH * N_BATCHES, 1, 16, 16, generator=g) * 2 - 1,
                         torch.zeros(BATCH * N_BATCHES).long())


def _fit(model):
    trainer = L.Trainer(max_epochs=1, limit_train_batches=N_BATCHES, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    torch.manual_seed(1234)
    trainer.fit(model, DataLoader(_data(), batch_size=BATCH, shuffle=False))


def test_diffusion_dcgan_switched_off_trains_bit_for_bit_like_dcgan():
    kw = dict(base_channels=4, latent_dim=8, instance_noise=0.1)
    torch.manual_seed(0)
    plain = DCGAN((1, 16, 16), **kw)
    after_plain = torch.rand(())
    torch.manual_seed(0)
    off = DiffusionDCGAN((1, 16, 16), diffusion={"enabled": False}, **kw)
    assert torch.rand(()) == after_plain  # the t embedding is built on a forked RNG
    _fit(plain)
    _fit(off)
    ours = off.discriminator.backbone.state_dict()
    for (name, a), b in zip(plain.discriminator.state_dict().items(), ours.values()):
        assert torch.equal(a, b), name
    for (name, a), b in zip(plain.generator.state_dict().items(), off.generator.state_dict().values()):
        assert torch.equal(a, b), name
    # ... and switched on, the same seed trains differently and T moves
    torch.manual_seed(0)
    on = DiffusionDCGAN((1, 16, 16), diffusion={"ada_interval": 2, "ada_kimg": 0.1}, **kw)
    _fit(on)
    first_layer = "net.0.weight"
    assert not torch.equal(on.generator.state_dict()[first_layer], plain.generator.state_dict()[first_layer])
    assert int(on.augment.num_updates) == N_BATCHES
    assert set(on.extra_logs()) == {"diffusion/p", "diffusion/T", "diffusion/r_d"}


def test_diffusion_stylegan2_trains_and_its_discriminator_sees_t():
    torch.manual_seed(0)
    model = DiffusionStyleGAN2((1, 16, 16), latent_dim=8, w_dim=8, mapping_layers=1, channel_base=32,
                               channel_max=4, r1_interval=2, pl_interval=2, mbstd_group_size=2,
                               diffusion={"t_embedding": "learned", "t_max": 20, "ada_interval": 1,
                                          "ada_kimg": 0.01})
    _fit(model)
    assert int(model.augment.T) == model.augment.T_for(float(model.augment.p))
    assert int(model.augment.num_updates) == N_BATCHES
    x = torch.randn(4, 1, 16, 16)
    d = model.discriminator
    assert not torch.allclose(d(x, None, torch.zeros(4, dtype=torch.long)), d(x, None, torch.full((4,), 20)))
    assert torch.isfinite(model.pl_mean) and float(model.pl_mean) > 0


@pytest.mark.parametrize("key,value", [("t_min", 0), ("t_sampling", "late"), ("t_embedding", "fourier"),
                                       ("noise_sd", 0.0), ("colour", 1)])
def test_impossible_diffusion_values_name_their_key(key, value):
    with pytest.raises(ConfigError, match=f"model.diffusion.{key}"):
        DiffusionDCGAN((1, 16, 16), base_channels=4, diffusion={key: value})
