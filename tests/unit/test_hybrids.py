"""DifGAN, DDGAN and seed 003's MLP GANs: the math each adds, checked against formulas written out here.

- ``step_weights`` / ``weighted_sum``: the seed's per-step weights eta_k, and a DifGAN loss with a stub
  discriminator of known logits equals the weighted sum written by hand; ``final_only`` is a plain GAN;
- ``matched`` noising gives reals with the forward process's mean and variance at each level;
- DDGAN with a generator that returns the true x_0 reproduces q(x_{t-1} | x_t, x_0) draws exactly through
  the shared ``posterior_step`` and ends on the data; its real pairs follow the forward chain;
- the vp schedule matches the VP SDE's alpha-bar; trajectories; config errors name their key.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from difgan.diffusion import NoiseSchedule, q_posterior, q_sample_pair, samplers
from difgan.errors import ConfigError
from difgan.losses import step_weights, weighted_sum
from difgan.models.ddgan import DDGAN
from difgan.models.difgan import DifGAN
from difgan.models.gan import GANModule, GANStep
from difgan.models.mlp_gan import MLPGAN
from difgan.nets.encdec import StepBatchNorm
from difgan.nets.minibatch_stddev import minibatch_stddev
from difgan.nets.time_discriminator import TimeConditionedDiscriminator

SHAPE = (1, 16, 16)
TINY = {"channels": 4, "d_channels": 4}


def difgan(**kw) -> DifGAN:
    torch.manual_seed(0)
    return DifGAN(SHAPE, **{**TINY, "steps": 4, **kw})


def ddgan(**kw) -> DDGAN:
    torch.manual_seed(0)
    return DDGAN(SHAPE, **{**TINY, "steps": 4, "latent_dim": 8, **kw})


def test_step_weights_known_values_and_errors():
    assert step_weights("uniform", 4) == [0.25] * 4
    assert step_weights("increasing", 4) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert step_weights("final_only", 3) == [0.0, 0.0, 1.0]
    assert step_weights([1, 0, 2], 3) == [1.0, 0.0, 2.0]  # explicit: as given
    for bad in (["x"], [1, 2], [0, 0, 0], [-1, 1, 1]):
        with pytest.raises(ValueError):
            step_weights(bad if bad != ["x"] else "x", 3)
    calls = []
    total = weighted_sum([0.5, 0.0, 2.0], lambda i: calls.append(i) or torch.tensor(float(i + 1)))
    assert float(total) == 0.5 * 1 + 2.0 * 3 and calls == [0, 2]  # zero weights are never evaluated


class StubD(nn.Module):
    """Known logits: a[t] * mean(x), a different slope per level."""

    def __init__(self, steps: int):
        super().__init__()
        self.a = torch.arange(1.0, steps + 1.0)

    def forward(self, x, t):
        return self.a[t] * x.flatten(1).mean(1)


@pytest.mark.parametrize("weights", ["uniform", "increasing", [0.1, 0.0, 0.5, 0.4]])
def test_difgan_losses_are_the_configured_weighted_sums(weights):
    model = difgan(weights_d=weights, weights_g=weights)
    model._discriminator = StubD(4)
    real = torch.rand(6, *SHAPE) * 2 - 1
    step = GANStep(real, None)
    step.fake = model.make_fake(step)
    chain = step.extra["chain"]
    assert len(chain) == 4 and step.fake is chain[-1]
    eta = step_weights(weights, 4)
    sp = F.softplus
    d_expected = g_expected = 0.0
    for i, z in enumerate(chain):
        level = 3 - i  # chain order: z_3, z_2, z_1, z_0
        real_logit = (level + 1) * real.flatten(1).mean(1)
        fake_logit = (level + 1) * z.detach().flatten(1).mean(1)
        d_expected += eta[i] * (sp(-real_logit).mean() + sp(fake_logit).mean())
        g_expected += eta[i] * sp(-fake_logit).mean()
    d_loss, real_logits, fake_logits = model.discriminator_loss(step)
    assert torch.allclose(d_loss, d_expected, atol=1e-6)
    assert torch.allclose(model.generator_loss(step), g_expected, atol=1e-6)
    assert real_logits.numel() == 6 * sum(w > 0 for w in eta)


def test_final_only_is_a_plain_gan_on_the_last_output():
    model = difgan(weights_d="final_only", weights_g="final_only")
    step = GANStep(torch.rand(5, *SHAPE) * 2 - 1, None)
    step.fake = model.make_fake(step)
    ours = model.discriminator_loss(step)[0]
    plain = GANModule.discriminator_loss(model, step)[0]  # D(x, 0) vs D(z_0, 0), the base loop's loss
    assert torch.equal(ours, plain)
    assert torch.equal(model.generator_loss(step), GANModule.generator_loss(model, step))
    uniform = difgan(weights_d="uniform")
    assert not torch.allclose(uniform.discriminator_loss(step)[0], ours)


def test_matched_noising_has_the_forward_process_mean_and_variance():
    model = difgan(real_noising="matched", schedule="cosine")
    x = torch.linspace(-1, 1, 256).reshape(1, *SHAPE).expand(4000, *SHAPE).contiguous()
    step = GANStep(x, None)
    assert model.real_at(step, 0) is x  # level 0: the clean image
    abar = model.schedule.alphas_cumprod_f64
    for level in (1, 2, 3):
        r = model.real_at(step, level)
        mean, var = r.mean(0), r.var(0)
        assert torch.allclose(mean, math.sqrt(abar[level - 1]) * x[0], atol=0.06)
        assert abs(float(var.mean()) - float(1 - abar[level - 1])) < 0.02
    clean = difgan(real_noising="clean")
    assert clean.real_at(GANStep(x, None), 3) is x


def test_backprop_options_checkpointing_is_exact_detach_truncates():
    grads = {}
    for name, kw in {"full": {}, "ckpt": {"gradient_checkpointing": True},
                     "detach": {"detach_between_steps": True}}.items():
        model = difgan(weights_g="final_only", **kw)
        nn.init.normal_(model.generator.backbone.conv_out.weight, std=0.3)  # zero at init: no signal back
        torch.manual_seed(3)
        step = GANStep(torch.rand(4, *SHAPE) * 2 - 1, None)
        step.fake = model.make_fake(step)
        model.generator_loss(step).backward()
        grads[name] = torch.cat([p.grad.flatten() for p in model.generator.parameters()
                                 if p.grad is not None])
    assert torch.allclose(grads["full"], grads["ckpt"], atol=1e-6)
    assert grads["full"].abs().sum() > 0 and not torch.allclose(grads["full"], grads["detach"], atol=1e-6)


class Oracle(nn.Module):
    """A DDGAN generator that returns the true x_0 whatever it is given."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x_t, t, z):
        return self.x0


def test_ddgan_chain_with_the_true_x0_draws_the_posterior_and_ends_on_the_data(monkeypatch):
    model = ddgan()
    x0 = torch.rand(3, *SHAPE) * 2 - 1
    calls = []
    shared = samplers.posterior_step
    monkeypatch.setattr(samplers, "posterior_step", lambda *a, **k: calls.append(1) or shared(*a, **k))
    x_T = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1))
    out = model.run_chain(Oracle(x0), x_T, torch.Generator().manual_seed(7), None)
    assert len(calls) == model.steps  # every step through the one shared posterior step
    assert torch.equal(out, x0)  # the last step (t = 0) is the posterior mean at x_0: the data itself

    # the same draws by hand: per step, the posterior noise (t > 0) then the latent z
    g, x = torch.Generator().manual_seed(7), x_T
    for t in range(model.steps - 1, 0, -1):
        noise = torch.randn(x.shape, generator=g)
        torch.randn(3, model.latent_dim, generator=g)
        tb = torch.full((3,), t)
        mean, var, _ = q_posterior(model.schedule, x0, x, tb)
        x = mean + var.sqrt() * noise
    _, traj = model.sample_trajectory(3, noise=x_T, generator=torch.Generator().manual_seed(7))
    assert len(traj.xs) == model.steps + 1 and traj.timesteps == [3, 2, 1, 0, -1]
    model._generator = Oracle(x0)  # no EMA here: sample() uses the generator
    _, traj = model.sample_trajectory(3, noise=x_T, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(traj.xs[-2], x, atol=1e-6)  # x_1, drawn from q(x_1 | x_2, x_0)
    assert torch.equal(traj.xs[-1], x0)


def test_ddgan_real_pairs_follow_the_forward_chain():
    schedule = NoiseSchedule.from_config("vp", 4)
    x0 = torch.full((20000, 1), 0.8)
    for t in range(4):
        prev, xt = q_sample_pair(schedule, x0, torch.full((20000,), t))
        abar_prev = 1.0 if t == 0 else float(schedule.alphas_cumprod_f64[t - 1])
        abar = float(schedule.alphas_cumprod_f64[t])
        assert abs(prev.mean() - math.sqrt(abar_prev) * 0.8) < 0.02
        assert abs(prev.var() - (1 - abar_prev)) < 0.03
        assert abs(xt.mean() - math.sqrt(abar) * 0.8) < 0.02 and abs(xt.var() - (1 - abar)) < 0.03
    # x_t given x_{t-1}: N(sqrt(alpha_t) x_{t-1}, beta_t)
    prev, xt = q_sample_pair(schedule, x0, torch.full((20000,), 2))
    resid = xt - schedule.alphas[2].sqrt() * prev
    assert abs(resid.var() - schedule.betas[2]) < 0.03 and abs(resid.mean()) < 0.02


def test_vp_schedule_matches_the_sde():
    s = NoiseSchedule.from_config("vp", 4, vp_beta_min=0.1, vp_beta_max=20.0)
    for t in range(1, 5):
        u = t / 4
        expected = math.exp(-(0.1 * u + 0.5 * 19.9 * u * u))
        assert math.isclose(float(s.alphas_cumprod_f64[t - 1]), expected, rel_tol=1e-9)
    assert s.terminal_signal() < 0.01


def difgan_with_step_latent() -> DifGAN:
    return difgan(step_latent_dim=3)


@pytest.mark.parametrize("build", [difgan, ddgan, difgan_with_step_latent])
def test_trajectory_last_frame_is_the_sample(build):
    model = build()
    noise = torch.randn(2, *SHAPE)
    images = model.sample(2, noise=noise, generator=torch.Generator().manual_seed(4))
    same, traj = model.sample_trajectory(2, noise=noise, generator=torch.Generator().manual_seed(4))
    assert torch.equal(images, same) and torch.equal(traj.xs[-1].clamp(-1, 1), images)
    assert traj.stacked().shape == (5, 2, *SHAPE) and torch.equal(traj.xs[0], noise)
    assert traj.timesteps == [3, 2, 1, 0, -1]
    assert model.sample_protocol()["generator_calls"] == 4  # what metrics.json records


def test_difgan_step_latent_makes_the_chain_stochastic_and_reproducible():
    """step_latent_dim > 0: the same z_T gives different images under different latents (drawn from the
    sampling generator, so a seed reproduces them); 0 is the seed's deterministic chain."""
    model = difgan(step_latent_dim=3)
    nn.init.normal_(model.generator.backbone.conv_out.weight)  # zero-initialised: make the output depend on u
    noise = torch.randn(2, *SHAPE)

    def draw(seed, m=model):
        return m.sample(2, noise=noise, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(1), draw(1)) and not torch.allclose(draw(1), draw(2))
    assert model.generator.backbone.cond_embed[0].in_features == 3
    plain = difgan()
    nn.init.normal_(plain.generator.backbone.conv_out.weight)
    assert plain.generator.backbone.cond_embed is None
    assert torch.equal(draw(1, plain), draw(2, plain))
    with pytest.raises(ConfigError) as e:
        difgan(step_latent_dim=-2)
    assert e.value.key == "model.step_latent_dim"


def test_step_batch_norm_keeps_statistics_per_timestep():
    """A batch with mixed timesteps is normalised step by step, exactly as separate calls would; each step's
    running statistics see only that step's activations (sampling in eval mode is then per step)."""
    torch.manual_seed(0)
    norm = StepBatchNorm(3, num_steps=2)
    h, t = torch.randn(8, 3, 4, 4), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    h[t == 1] = h[t == 1] * 5 + 2  # step 1's activations have their own scale and mean
    out = norm(h, t)
    reference = StepBatchNorm(3, num_steps=2)
    for step in (0, 1):
        torch.testing.assert_close(out[t == step], reference.norms[step](h[t == step]))
        torch.testing.assert_close(norm.norms[step].running_mean, reference.norms[step].running_mean)
    assert norm.norms[1].running_mean.mean() > 0.1 > norm.norms[0].running_mean.abs().max()
    model = difgan(encdec_norm="batch")
    assert isinstance(model.generator.backbone.norms[0], StepBatchNorm)
    assert model.sample(2).shape == (2, *SHAPE)
    with pytest.raises(ConfigError) as e:
        difgan(encdec_norm=True)  # the old boolean is rejected with the valid choices
    assert e.value.key == "model.encdec_norm" and "group, batch, none" in str(e.value)


def test_backbone_width_is_the_configured_one():
    assert difgan(channels=6).generator.backbone.conv_in.out_channels == 6  # not the image's channels
    assert ddgan(channels=5, backbone="encdec").generator.backbone.conv_in.out_channels == 5


def test_minibatch_stddev_known_values():
    x = torch.zeros(4, 2, 1, 1)
    x[:, 0, 0, 0] = torch.tensor([0.0, 1.0, 4.0, 3.0])  # channel 1 is constant: std ~ sqrt(1e-8)
    out = minibatch_stddev(x, group_size=2)  # groups pair sample b with b + B/2: (0, 4) and (1, 3)
    assert out.shape == (4, 3, 1, 1) and torch.equal(out[:, :2], x)
    expected = torch.tensor([(2 + 1e-4) / 2, (1 + 1e-4) / 2] * 2)
    torch.testing.assert_close(out[:, 2, 0, 0], expected)
    whole = minibatch_stddev(x, group_size=4)[:, 2, 0, 0]  # population std of 0, 1, 4, 3 is sqrt(2.5)
    torch.testing.assert_close(whole, torch.full((4,), (math.sqrt(2.5) + 1e-4) / 2))


def test_time_conditioned_discriminator_with_mbstd_sees_its_batch_mates():
    """With the minibatch-stddev feature a sample's logit depends on the other samples of its group (how a
    collapsed batch gets caught); without it, it does not."""
    torch.manual_seed(0)
    x, t = torch.randn(4, *SHAPE), torch.zeros(4, dtype=torch.long)
    collapsed = x[:1].expand(4, -1, -1, -1)
    for group, depends in ((4, True), (0, False)):
        d = TimeConditionedDiscriminator(1, 16, 4, 4, mbstd_group_size=group)
        nn.init.normal_(d.out.weight)  # make the stddev channel's weight clearly non-zero
        varied, same = d(x, t)[0], d(collapsed, t)[0]
        assert torch.isclose(varied, same).item() is not depends
    assert difgan(d_mbstd_group_size=4).discriminator.mbstd_group_size == 4
    with pytest.raises(ConfigError) as e:
        difgan(d_mbstd_group_size=-1)
    assert e.value.key == "model.d_mbstd_group_size"


def test_mlp_gans_and_config_errors():
    high = MLPGAN(SHAPE, latent_dim="image", g_hidden=[8], d_hidden=[8])
    assert high.noise_shape == (256,) and high.sample(3).shape == (3, *SHAPE)
    assert MLPGAN(SHAPE, g_hidden=[8], d_hidden=[8]).noise_shape == (100,)
    cases = [(lambda: MLPGAN(SHAPE, num_classes=10), "model.conditional"),
             (lambda: MLPGAN(SHAPE, latent_dim="big"), "model.latent_dim"),
             (lambda: difgan(weights_d=[1, 2]), "model.weights_d"),
             (lambda: difgan(weights_g="decreasing"), "model.weights_g"),
             (lambda: difgan(real_noising="noisy"), "model.real_noising"),
             (lambda: difgan(steps=0), "model.steps"),
             (lambda: ddgan(schedule="sigmoid"), "model.schedule"),
             (lambda: ddgan(t_embedding="fourier"), "model.t_embedding"),
             (lambda: ddgan(backbone="resnet"), "model.backbone"),
             (lambda: DDGAN((1, 20, 20), **TINY), "data.resolution")]
    for make, key in cases:
        with pytest.raises(ConfigError) as e:
            make()
        assert e.value.key == key
