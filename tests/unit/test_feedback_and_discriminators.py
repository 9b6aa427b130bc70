"""Time-conditioned discriminators and the feedback model's pieces, on tiny networks: what each method feeds
the discriminator, where gradients flow (truncated backprop through the sampling chain, the frozen UNet
encoder), and config validation."""

from __future__ import annotations

import pytest
import torch

from difgan.diffusion import ddpm_step
from difgan.errors import ConfigError
from difgan.models.feedback import METHODS, DDPMFeedback
from difgan.nets.time_discriminator import TimeConvDiscriminator, UNetEncoderDiscriminator
from difgan.nets.unet import UNet

UNET = {"channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_resolutions": (),
        "dropout": 0.0}


def feedback(method="noise_time", **fb):
    torch.manual_seed(0)
    return DDPMFeedback((1, 16, 16), 0, feedback={"method": method, "base_channels": 8, "depth": 2,
                                                  "chain_steps": 4, "backprop_steps": 1, **fb},
                        timesteps=20, beta_end=0.5, unet=UNET, warmup_kimg=0)


def test_time_conv_discriminator_depends_on_t_and_label():
    d = TimeConvDiscriminator(1, 16, 8, 2, num_classes=3, num_timesteps=20)
    for p in d.parameters():  # FiLM and class projection start at zero: move them off it
        torch.nn.init.normal_(p, 0, 0.3)
    x = torch.randn(4, 1, 16, 16)
    a = d(x, torch.full((4,), 2), torch.zeros(4, dtype=torch.long))
    assert a.shape == (4,)
    assert not torch.allclose(a, d(x, torch.full((4,), 15), torch.zeros(4, dtype=torch.long)))
    assert not torch.allclose(a, d(x, torch.full((4,), 2), torch.ones(4, dtype=torch.long)))
    with pytest.raises(ValueError):
        d(x, None)
    plain = TimeConvDiscriminator(1, 16, 8, 2, time_conditioned=False)
    assert plain(x).shape == (4,) and plain.time_embed is None


def test_unet_encoder_discriminator_trains_the_head_only():
    unet = UNet(1, 16, **UNET)
    d = UNetEncoderDiscriminator(unet, head_channels=8)
    d.train()
    assert not unet.training  # frozen encoder stays in eval mode
    x = torch.randn(3, 1, 16, 16)
    d(x, torch.tensor([1, 5, 9])).sum().backward()
    assert all(p.grad is None for p in unet.parameters())
    assert all(p.grad is not None for p in d.head.parameters())
    h = unet.encode(x, torch.tensor([1, 5, 9]))
    assert h.shape == (3, 16, 8, 8)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_feeds_the_discriminator_what_seed_000_describes(method):
    m = feedback(method)
    x0 = torch.rand(4, 1, 16, 16) * 2 - 1
    torch.manual_seed(1)
    real, fake, t, mse = m.feedback_inputs(x0, None)
    assert real.shape == fake.shape == x0.shape and mse.ndim == 0
    assert fake.requires_grad and not real.requires_grad
    assert (t is not None) == (method in ("noise_time", "next_image"))
    assert m.discriminator.time_conditioned == (method in ("noise_time", "next_image"))
    if method.startswith("final_image"):
        assert torch.equal(real, x0)
    logit = m._judge(fake, t, None)
    assert logit.shape == (4,)


def test_next_image_pairs_differ_only_through_the_predicted_noise():
    m = feedback("next_image")
    x0 = torch.rand(4, 1, 16, 16) * 2 - 1
    torch.manual_seed(2)
    real, fake, t, _ = m.feedback_inputs(x0, None)
    torch.manual_seed(2)
    t2, noise, xt, eps = m.predict_noise(x0, None)
    z = torch.randn_like(x0)
    want_real, _ = ddpm_step(m.schedule, xt, t2, noise, z, sigma="beta", clip_x0=False)
    want_fake, _ = ddpm_step(m.schedule, xt, t2, eps, z, sigma="beta", clip_x0=False)
    torch.testing.assert_close(real, want_real)
    torch.testing.assert_close(fake, want_fake)


def test_final_image_chain_backpropagates_through_the_last_k_steps_only():
    m = feedback("final_image", chain_steps=4, backprop_steps=1)
    graphs = []
    m.unet.register_forward_hook(lambda mod, inp, out: graphs.append(out.requires_grad))
    out = m.differentiable_sample(2, None)
    assert graphs == [False, False, False, True]
    out.mean().backward()
    assert all(p.grad is not None for p in m.unet.parameters() if p.requires_grad)


def test_feedback_config_errors_name_the_key():
    for fb, key in (({"method": "gan"}, "model.feedback.method"),
                    ({"backprop_steps": 9}, "model.feedback.backprop_steps"),
                    ({"adv_weight": 0.0, "mse_weight": 0.0}, "model.feedback.mse_weight"),
                    ({"lr_d": 1}, "model.feedback.lr_d")):
        with pytest.raises(ConfigError) as e:
            feedback(**fb)
        assert e.value.key == key
    assert set(feedback().networks()) == {"sampling_network", "discriminator"}


def test_discriminator_module_round_trips_through_its_checkpoint(tmp_path):
    from difgan.models.discriminator import TimeDiscriminatorModule, load_discriminator

    spec = {"in_channels": 1, "resolution": 16, "num_classes": 0, **UNET, "channel_mult": [1, 2],
            "attention_resolutions": []}
    m = TimeDiscriminatorModule((1, 16, 16), 0, {"schedule": "linear", "timesteps": 20, "beta_end": 0.5},
                                backbone="unet_encoder", unet=spec, head_channels=8, t_sampling="importance")
    batch = (torch.rand(6, 1, 16, 16) * 2 - 1, torch.tensor([1, 1, 1, 0, 0, 0]), torch.full((6,), -1))
    m.log_dict = lambda *a, **k: None  # no trainer attached
    loss = m.training_step(batch, 0)
    assert torch.isfinite(loss)
    m.validation_step(batch, 0)
    m.on_validation_epoch_end()
    assert m.heldout[0]["n"] == 6
    ckpt = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "d.ckpt")
    d = load_discriminator(tmp_path / "d.ckpt")
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 17])
    torch.testing.assert_close(d(x, t), m.eval()(x, t))
    assert d.heldout == m.heldout and not any(p.requires_grad for p in d.parameters())
