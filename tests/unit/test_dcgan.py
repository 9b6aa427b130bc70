"""DCGAN networks and the adversarial training step."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from difgan.data import ImageDataModule
from difgan.errors import ConfigError
from difgan.losses import annealed, discriminator_bce, generator_nonsaturating
from difgan.models.gan import DCGAN
from difgan.nets.dcgan import DCGANDiscriminator, DCGANGenerator, base_grid


@pytest.mark.parametrize("resolution", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_range(resolution, channels):
    g = DCGANGenerator(latent_dim=16, channels=channels, resolution=resolution, base_channels=8)
    d = DCGANDiscriminator(channels=channels, resolution=resolution, base_channels=8)
    x = g(torch.randn(5, 16))
    assert x.shape == (5, channels, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert d(x).shape == (5,)


def test_base_grid_rejects_impossible_resolutions():
    assert base_grid(28) == (7, 2) and base_grid(32) == (4, 3) and base_grid(64) == (4, 4)
    for bad in (30, 7, 4, 100):
        with pytest.raises(ValueError):
            base_grid(bad)
    with pytest.raises(ConfigError, match="data.resolution"):
        DCGAN((1, 30, 30))


def test_losses_match_formulas():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = torch.sigmoid
    expected_d = -(0.9 * torch.log(sig(real)) + 0.1 * torch.log(1 - sig(real))).mean() \
        - (0.1 * torch.log(sig(fake)) + 0.9 * torch.log(1 - sig(fake))).mean()
    assert torch.allclose(discriminator_bce(real, fake, 0.9, 0.1), expected_d, atol=1e-6)
    assert torch.allclose(generator_nonsaturating(fake), -torch.log(sig(fake)).mean(), atol=1e-6)
    assert annealed(0.1, 0, 10) == 0.1 and annealed(0.1, 5000, 10) == pytest.approx(0.05)
    assert annealed(0.1, 20000, 10) == 0.0 and annealed(0.1, 10**9, 0) == 0.1


def _params(net):
    return [p.detach().clone() for p in net.parameters()]


def _changed(before, net):
    return any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_discriminator_only_batches_leave_generator_alone():
    """With d_steps=2 the first batch updates only D; the second updates both. The EMA follows G."""
    dm = ImageDataModule("mnist_offline", "unused", 28, 1, batch_size=8, limit=64)
    model = DCGAN((1, 28, 28), base_channels=8, d_steps=2, ema={"half_life_kimg": 0.01})
    g0, d0, e0 = _params(model.generator), _params(model.discriminator), _params(model.ema.averaged)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert model.batches_seen == 1 and model.images_seen == 8
    assert _changed(d0, model.discriminator) and not _changed(g0, model.generator)
    assert not _changed(e0, model.ema.averaged)  # G unchanged, so its average is unchanged

    g1, d1 = _params(model.generator), _params(model.discriminator)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)  # a fresh trainer: one batch, D and G steps
    assert model.batches_seen == 2
    assert _changed(g1, model.generator) and _changed(d1, model.discriminator)
    assert _changed(e0, model.ema.averaged)
    # the EMA moved toward G but not onto it
    pairs = zip(model.ema.averaged.parameters(), model.generator.parameters())
    assert not all(torch.equal(a, b) for a, b in pairs)


def test_conditional_sampling_honours_labels():
    model = DCGAN((1, 28, 28), num_classes=10, base_channels=8)
    labels = torch.tensor([3, 3, 7, 0])
    z = torch.randn(4, model.latent_dim)
    out = model.sample(4, labels, noise=z, use_ema=False)
    assert out.shape == (4, 1, 28, 28)
    # the label reaches the generator: same z, different label, different image
    other = model.sample(4, torch.tensor([4, 3, 7, 0]), noise=z, use_ema=False)
    assert not torch.allclose(out[0], other[0]) and torch.allclose(out[1:], other[1:])
    with pytest.raises(ValueError, match="labels must lie"):
        model.sample(2, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="unconditional"):
        DCGAN((1, 28, 28), base_channels=8).sample(2, torch.tensor([0, 1]))


@pytest.mark.slow
def test_training_moves_samples_toward_the_data():
    """After a short run on real digits the generator's pixel distribution approaches the data's.

    Measured as the 1-D Wasserstein distance between pixel values of samples and real digits. At
    initialisation G outputs mid-grey (~0.9 away from MNIST's mostly -1 background); a broken loss (wrong
    sign, D and G swapped, no generator update) does not close that gap.
    """
    L.seed_everything(0)
    dm = ImageDataModule("mnist_offline", "unused", 28, 1, batch_size=64, seed=0)
    model = DCGAN((1, 28, 28), base_channels=32, ema=None)
    real = torch.cat([dm.on_after_batch_transfer(b, 0)[0] for b, _ in zip(dm.train_dataloader(), range(4))])
    real_sorted = real.flatten().sort().values

    def pixel_w1(fake):
        f = fake.flatten().sort().values
        return (f - real_sorted[torch.linspace(0, len(real_sorted) - 1, len(f)).long()]).abs().mean()

    before = pixel_w1(model.sample(256, use_ema=False))
    trainer = L.Trainer(max_steps=2 * 250, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    after = pixel_w1(model.sample(256, use_ema=False))
    assert model.batches_seen == 250 and trainer.global_step == 500  # two optimizer steps per batch
    assert after < 0.75 * before, (before, after)
