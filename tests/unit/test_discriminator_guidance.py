"""Discriminator guidance (Kim et al. 2023) on Gaussian toys where every quantity is analytic: the exact
density-ratio discriminator turns the model's eps into the data's (sign and scale), guidance moves samples
towards higher D, w = 0 and the t window leave the sampler bit-exact, ensembles average, and gradients reach
x_t only. Plus the discriminator-training math: importance sampling of t, ECE, per-bucket metrics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from difgan.diffusion import NoiseSchedule, ddim_sample, ddpm_sample
from difgan.diffusion.discriminator_guidance import (
    DiscriminatorGuidance,
    bucket_metrics,
    combine_logits,
    expected_calibration_error,
    in_window,
    logit_gradient,
    sample_from,
    timestep_probabilities,
)

SCHED = NoiseSchedule.from_config("linear", 100, 1e-4, 0.2)


def _abar(t):
    return SCHED.alphas_cumprod_f64[t.long()].float()[:, None]


class Gaussian:
    """x_0 ~ N(mu, s^2 I) in 2-D; its diffused marginal at t is N(sqrt(abar) mu, abar s^2 + 1 - abar)."""

    def __init__(self, mu, s):
        self.mu, self.s = torch.tensor(mu), float(s)

    def moments(self, t):
        a = _abar(t)
        return a.sqrt() * self.mu, a * self.s**2 + 1 - a

    def log_density(self, x, t):
        m, v = self.moments(t)
        return (-0.5 * (x - m) ** 2 / v - 0.5 * torch.log(2 * math.pi * v)).sum(1)

    def eps(self, x, t):
        """The exact eps of this distribution: -sqrt(1 - abar) * score = sqrt(1 - abar) (x - m) / v."""
        m, v = self.moments(t)
        return (1 - _abar(t)).sqrt() * (x - m) / v


DATA, MODEL = Gaussian([1.0, -0.5], 0.5), Gaussian([0.0, 0.0], 0.8)


def ratio_discriminator(x, t, labels=None):
    """The Bayes-optimal discriminator of data vs model: logit = log q_t(x) - log p_t(x)."""
    return DATA.log_density(x, t) - MODEL.log_density(x, t)


def test_exact_discriminator_turns_the_model_eps_into_the_data_eps():
    x = torch.randn(64, 2)
    hook = DiscriminatorGuidance(ratio_discriminator, weight=1.0)
    for step in (99, 50, 3):
        t = torch.full((64,), step)
        guided = hook(x, t, MODEL.eps(x, t), schedule=SCHED)
        torch.testing.assert_close(guided, DATA.eps(x, t), atol=1e-4, rtol=1e-4)


def test_full_sampler_with_exact_discriminator_reaches_the_data_distribution():
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    hook = DiscriminatorGuidance(ratio_discriminator, weight=1.0)
    guided = ddim_sample(MODEL.eps, SCHED, x_T, steps=50, clip_x0=False, guidance=hook)
    plain = ddim_sample(MODEL.eps, SCHED, x_T, steps=50, clip_x0=False)
    assert torch.allclose(guided.mean(0), DATA.mu, atol=0.05), guided.mean(0)
    assert torch.allclose(guided.std(0), torch.full((2,), DATA.s), atol=0.05)
    assert torch.allclose(plain.mean(0), MODEL.mu, atol=0.05)


def test_guidance_moves_samples_towards_higher_discriminator_output():
    direction = torch.tensor([1.0, 2.0])

    def linear_d(x, t, labels=None):
        return x @ direction

    x_T = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    scores = []
    for w in (0.0, 0.5, 2.0):
        hook = DiscriminatorGuidance(linear_d, weight=w)
        out = ddpm_sample(MODEL.eps, SCHED, x_T, clip_x0=False, guidance=hook,
                          generator=torch.Generator().manual_seed(2))
        scores.append(float(linear_d(out, None).mean()))
    assert scores[0] < scores[1] < scores[2], scores


def test_weight_zero_and_an_empty_window_are_bit_exact():
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(3))
    plain = ddpm_sample(MODEL.eps, SCHED, x_T, generator=torch.Generator().manual_seed(4))
    for hook in (DiscriminatorGuidance(ratio_discriminator, weight=0.0),
                 DiscriminatorGuidance(ratio_discriminator, weight=3.0, t_min=0.0, t_max=0.0)):
        out = ddpm_sample(MODEL.eps, SCHED, x_T, guidance=hook, generator=torch.Generator().manual_seed(4))
        assert torch.equal(out, plain)


def test_the_t_window_is_honoured():
    seen = []

    def recording_d(x, t, labels=None):
        seen.append(int(t[0]))
        return x.sum(1)

    hook = DiscriminatorGuidance(recording_d, weight=1.0, t_min=0.3, t_max=0.6)
    x = torch.randn(4, 2)
    for step in range(100):
        t = torch.full((4,), step)
        eps = MODEL.eps(x, t)
        out = hook(x, t, eps, schedule=SCHED)
        inside = 0.3 <= (step + 1) / 100 <= 0.6
        assert (out is eps) != inside
    assert seen == [s for s in range(100) if 0.3 <= (s + 1) / 100 <= 0.6]
    assert in_window(torch.tensor([99, 0]), 100, 1.0, 1.0).tolist() == [True, False]


def test_ensembles_average_logits_or_probabilities():
    a, b = torch.tensor([2.0, -1.0, 0.0]), torch.tensor([0.0, 3.0, -4.0])
    torch.testing.assert_close(combine_logits([a, b], "logits"), (a + b) / 2)
    p = combine_logits([a, b], "probabilities")
    torch.testing.assert_close(torch.sigmoid(p), (torch.sigmoid(a) + torch.sigmoid(b)) / 2)
    # mean-logit ensemble of two discriminators == one discriminator with the mean logit (linear gradient)
    d1, d2 = (lambda x, t, y=None: 3 * x[:, 0]), (lambda x, t, y=None: -x[:, 1] ** 2)
    x, t = torch.randn(8, 2), torch.full((8,), 40)
    both = DiscriminatorGuidance([d1, d2], 1.0, ensemble="logits")(x, t, torch.zeros(8, 2), schedule=SCHED)
    mean = DiscriminatorGuidance(lambda x, t, y=None: (d1(x, t) + d2(x, t)) / 2, 1.0)(
        x, t, torch.zeros(8, 2), schedule=SCHED)
    torch.testing.assert_close(both, mean)
    assert DiscriminatorGuidance([d1, d2], ensemble="probabilities").settings()["num_discriminators"] == 2


def test_gradients_reach_x_t_only_and_no_graph_survives_a_step():
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))

    def d(x, t, labels=None):
        return net(x).squeeze(1)

    hook = DiscriminatorGuidance(d, weight=1.0)
    x_T = torch.randn(32, 2)
    with torch.no_grad():  # as GenerativeModule.sample calls the samplers
        out = ddim_sample(MODEL.eps, SCHED, x_T, steps=20, guidance=hook)
    assert all(p.grad is None for p in net.parameters())
    assert not out.requires_grad and out.grad_fn is None
    x = torch.randn(4, 2, requires_grad=True)
    logit, grad = logit_gradient([d], x, torch.full((4,), 10))
    assert grad.grad_fn is None and logit.grad_fn is None and x.grad is None


def test_importance_sampling_of_t_follows_beta_over_one_minus_abar():
    probs = timestep_probabilities(SCHED, "importance")
    w = SCHED.betas.double() / (1 - SCHED.alphas_cumprod_f64)
    torch.testing.assert_close(probs, w / w.sum(), rtol=1e-5, atol=1e-9)
    assert probs[0] > 5 * probs[50] and float(probs[:10].sum()) > 0.25  # small t favoured (uniform: 0.1)
    uniform = timestep_probabilities(SCHED, "uniform")
    torch.testing.assert_close(uniform.sum(), torch.tensor(1.0, dtype=torch.float64))
    draws = sample_from(probs, 20000, generator=torch.Generator().manual_seed(0))
    assert abs(float((draws < 10).float().mean()) - float(probs[:10].sum())) < 0.02
    with pytest.raises(ValueError):
        timestep_probabilities(SCHED, "cosine")


def test_expected_calibration_error_known_values():
    y = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0.0])
    assert expected_calibration_error(torch.full((8,), 0.5), y) == pytest.approx(0.0)
    assert expected_calibration_error(torch.tensor([0.9] * 4 + [0.1] * 4), y) == pytest.approx(0.1)
    # two bins, slow formula: bin [0.8, 0.9): conf 0.85, acc 0.5 (half of the items)
    p = torch.tensor([0.85, 0.85, 0.15, 0.15])
    assert expected_calibration_error(p, torch.tensor([1, 0, 0, 0.0])) == pytest.approx(
        0.5 * abs(0.5 - 0.85) + 0.5 * abs(0.0 - 0.15))


def test_bucket_metrics_split_by_noise_level():
    t = torch.tensor([0, 10, 55, 99])
    logits = torch.tensor([5.0, -5.0, 5.0, 5.0])
    rows = bucket_metrics(t, logits, torch.tensor([1, 0, 0, 1.0]), 100, n_buckets=2)
    assert [r["bucket"] for r in rows] == ["all", "0", "1"]
    assert rows[0]["n"] == 4 and rows[0]["acc"] == 0.75
    assert rows[1]["n"] == 2 and rows[1]["acc"] == 1.0 and rows[2]["acc"] == 0.5
