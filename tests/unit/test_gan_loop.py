"""The GAN loop as overridable steps: DCGAN trains bit-for-bit like the fixed recipe it replaced, and each
step (losses, per-network optimizers, lazy regularisers, the after-D hook) does what it says."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from difgan.errors import ConfigError
from difgan.losses import (
    LOSSES,
    annealed,
    discriminator_bce,
    discriminator_hinge,
    discriminator_logistic,
    generator_hinge,
    instance_noise,
    r1_penalty,
)
from difgan.models.gan import DCGAN, Regularizer

BATCH, N_BATCHES = 8, 6


def _data(conditional: bool):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(BATCH * N_BATCHES, 1, 28, 28, generator=g) * 2 - 1
    y = torch.randint(10, (BATCH * N_BATCHES,), generator=g) if conditional else torch.zeros(len(x)).long()
    return TensorDataset(x, y)


def _fit(model, dataset, batches=N_BATCHES):
    trainer = L.Trainer(max_epochs=1, limit_train_batches=batches, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    torch.manual_seed(1234)
    trainer.fit(model, DataLoader(dataset, batch_size=BATCH, shuffle=False))
    return trainer


def _reference_recipe(gen, disc, dataset, conditional, lr, betas, d_steps, smoothing, noise_std, noise_kimg):
    """The loop GANModule.training_step hard-coded before it was split into steps, written out plainly."""
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=betas)
    torch.manual_seed(1234)
    seen = 0
    for i, (real, labels) in enumerate(DataLoader(dataset, batch_size=BATCH, shuffle=False), start=1):
        labels = labels if conditional else None
        seen += real.shape[0]
        std = annealed(noise_std, seen, noise_kimg)
        g_turn = i % d_steps == 0
        z = torch.randn(real.shape[0], gen.latent_dim)
        with torch.set_grad_enabled(g_turn):
            fake = gen(z, labels)
        real_logits = disc(instance_noise(real, std), labels)
        fake_logits = disc(instance_noise(fake.detach(), std), labels)
        d_loss = discriminator_bce(real_logits, fake_logits, 1 - smoothing, 0.0)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        if g_turn:
            disc.requires_grad_(False)
            g_loss = F.softplus(-disc(instance_noise(fake, std), labels)).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            disc.requires_grad_(True)


@pytest.mark.parametrize("conditional,d_steps,smoothing,noise_std", [
    (False, 1, 0.0, 0.0),
    (True, 2, 0.1, 0.2),
])
def test_dcgan_trains_bit_for_bit_like_the_fixed_recipe(conditional, d_steps, smoothing, noise_std):
    torch.manual_seed(0)
    model = DCGAN((1, 28, 28), num_classes=10 if conditional else 0, base_channels=8, latent_dim=16,
                  d_steps=d_steps, label_smoothing=smoothing, instance_noise=noise_std,
                  instance_noise_kimg=0.03)
    gen, disc = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
    gen.latent_dim = 16
    dataset = _data(conditional)
    _fit(model, dataset)
    _reference_recipe(gen, disc, dataset, conditional, 2e-4, (0.5, 0.999), d_steps, smoothing, noise_std,
                      0.03)
    for ours, ref in ((model.generator, gen), (model.discriminator, disc)):
        for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
            assert torch.equal(a, b), name
    assert model.batches_seen == N_BATCHES and model.images_seen == N_BATCHES * BATCH


def test_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([0.5, -3.0, 1.2])
    sig = torch.sigmoid
    expected = -torch.log(sig(real)).mean() - torch.log(1 - sig(fake)).mean()
    assert torch.allclose(discriminator_logistic(real, fake), expected, atol=1e-6)
    assert torch.allclose(discriminator_logistic(real, fake), discriminator_bce(real, fake), atol=1e-6)
    hinge = torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean()
    assert torch.allclose(discriminator_hinge(real, fake), hinge)
    assert torch.allclose(generator_hinge(fake), -fake.mean())
    assert set(LOSSES) == {"bce", "logistic", "hinge"}


def test_r1_is_the_squared_input_gradient_norm_of_a_linear_discriminator():
    w = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * w).flatten(1).sum(1) + 0.7
    assert torch.allclose(r1_penalty(logits, x), w.square().sum(), rtol=1e-5)


def test_per_network_optimizer_settings_and_lazy_correction():
    model = DCGAN((1, 28, 28), base_channels=4, latent_dim=8, lr=1e-3, betas=(0.0, 0.99),
                  optim={"d": {"lr": 4e-3}})
    opt_g, opt_d = model.configure_optimizers()
    assert opt_g.param_groups[0]["lr"] == 1e-3 and opt_d.param_groups[0]["lr"] == 4e-3
    model.regularizers = lambda: [Regularizer("r1", "d", 16, lambda step: torch.zeros(()))]
    opt_g, opt_d = model.configure_optimizers()
    c = 16 / 17  # Karras et al. 2020 appendix B: lr * c, beta ** c for a regulariser every 16 batches
    assert opt_d.param_groups[0]["lr"] == pytest.approx(4e-3 * c)
    assert opt_d.param_groups[0]["betas"] == pytest.approx((0.0, 0.99**c))
    assert opt_g.param_groups[0]["lr"] == 1e-3  # G has no lazy regulariser
    with pytest.raises(ConfigError, match="model.optim.x"):
        DCGAN((1, 28, 28), base_channels=4, optim={"x": {}})
    with pytest.raises(ConfigError, match="model.optim.g.momentum"):
        DCGAN((1, 28, 28), base_channels=4, optim={"g": {"momentum": 0.9}})
    with pytest.raises(ConfigError, match="model.loss"):
        DCGAN((1, 28, 28), base_channels=4, loss="wasserstein")


class _Probe(DCGAN):
    """Records which hooks ran on which batch, and applies a lazy regulariser every 2 batches."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls: list[tuple[str, int]] = []

    def regularizers(self):
        def penalty(step):
            self.calls.append(("reg", self.batches_seen))
            x = step.real.detach().requires_grad_(True)
            return r1_penalty(self.discriminator(x, step.labels), x)

        return [Regularizer("r1", "d", 2, penalty)]

    def after_d_step(self, step, real_logits, fake_logits):
        self.calls.append(("after_d", self.batches_seen))
        assert not real_logits.requires_grad and real_logits.shape == (step.real.shape[0],)


def test_hooks_run_in_order_and_lazy_regularisers_on_their_interval():
    torch.manual_seed(0)
    model = _Probe((1, 28, 28), base_channels=4, latent_dim=8, loss="logistic")
    d_before = [p.detach().clone() for p in model.discriminator.parameters()]
    _fit(model, _data(False), batches=4)
    assert model.calls == [("after_d", 1), ("after_d", 2), ("reg", 2), ("after_d", 3), ("after_d", 4),
                           ("reg", 4)]
    assert any(not torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters()))
