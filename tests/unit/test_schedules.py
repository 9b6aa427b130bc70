"""Noise schedules, the forward process and the posterior, each against an independently written formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from difgan.diffusion import (
    NoiseSchedule,
    cosine_betas,
    make_betas,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_mean_variance,
    q_posterior,
    q_sample,
    sample_timesteps,
)


@pytest.mark.parametrize("T", [1, 10, 300, 1000, 4000])
def test_linear_alphas_cumprod_match_the_closed_form(T):
    s = NoiseSchedule.from_config("linear", T)
    i = np.arange(T)
    beta = 1e-4 + (0.02 - 1e-4) * (i / (T - 1) if T > 1 else 0.0)  # beta_{i+1}, written out
    abar = np.exp(np.cumsum(np.log1p(-beta)))
    np.testing.assert_allclose(s.alphas_cumprod.double().numpy(), abar, rtol=2e-6, atol=1e-12)
    np.testing.assert_allclose(s.betas.double().numpy(), beta, rtol=1e-6)
    assert s.num_timesteps == T


def test_linear_schedule_reproduces_known_terminal_values():
    # Ho et al.'s T=1000 schedule leaves sqrt(abar_T) = 0.0064 of the signal; the seeds' T=300 leaves 0.22.
    assert NoiseSchedule.from_config("linear", 1000).terminal_signal() == pytest.approx(0.006353, rel=1e-3)
    assert NoiseSchedule.from_config("linear", 300).terminal_signal() == pytest.approx(0.2192, rel=1e-3)


@pytest.mark.parametrize("T", [50, 300, 1000, 4000])
def test_cosine_alphas_cumprod_match_the_closed_form(T):
    s, offset = NoiseSchedule.from_config("cosine", T), 0.008
    t = np.arange(1, T + 1)
    f = np.cos((t / T + offset) / (1 + offset) * np.pi / 2) ** 2
    f0 = np.cos(offset / (1 + offset) * np.pi / 2) ** 2
    abar = f / f0
    unclipped = cosine_betas(T).numpy() < 0.999  # the clip at 0.999 only touches the last steps
    assert unclipped[: int(0.95 * T)].all()
    first_clipped = int(np.argmin(unclipped)) if not unclipped.all() else T
    np.testing.assert_allclose(
        s.alphas_cumprod.double().numpy()[:first_clipped], abar[:first_clipped], rtol=1e-5, atol=1e-9
    )
    assert (s.betas <= 0.999).all() and (s.betas > 0).all()
    assert s.terminal_signal() < 1e-3


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_derived_quantities_are_consistent(schedule):
    s = NoiseSchedule.from_config(schedule, 200)
    abar = s.alphas_cumprod.double()
    assert (abar[1:] < abar[:-1]).all() and abar[0] < 1
    assert torch.allclose(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1]) and s.alphas_cumprod_prev[0] == 1
    assert torch.allclose(
        s.sqrt_alphas_cumprod**2 + s.sqrt_one_minus_alphas_cumprod**2, torch.ones(200), atol=1e-6
    )
    assert s.posterior_variance[0] == 0 and (s.posterior_variance[1:] < s.betas[1:]).all()
    assert torch.isfinite(s.posterior_log_variance_clipped).all()
    snr = s.snr()
    assert (snr[1:] < snr[:-1]).all()


def test_schedule_buffers_are_not_in_checkpoints_and_move_with_the_module():
    s = NoiseSchedule.from_config("linear", 10)
    assert s.state_dict() == {}
    assert s.to(torch.float64).betas.dtype == torch.float64  # buffers follow .to() like any module's


@pytest.mark.parametrize(
    "bad",
    [
        dict(schedule="sqrt"),
        dict(timesteps=0),
        dict(beta_start=0.0),
        dict(beta_start=0.03),
        dict(beta_end=1.0),
        dict(schedule="cosine", cosine_s=-1),
    ],
)
def test_impossible_schedules_are_rejected(bad):
    kwargs = {"schedule": "linear", "timesteps": 10, **bad}
    with pytest.raises(ValueError):
        make_betas(**kwargs)


def test_forward_process_statistics_on_a_large_batch_with_per_sample_t():
    torch.manual_seed(0)
    s = NoiseSchedule.from_config("linear", 1000)
    x0 = torch.tensor([0.9, -0.5, 0.1, -1.0]).reshape(1, 1, 2, 2)
    ts = torch.tensor([0, 99, 499, 999])
    n = 20000
    t = ts.repeat_interleave(n)  # one batch, four different timesteps in it
    xt = q_sample(s, x0.expand(len(t), -1, -1, -1), t).reshape(4, n, 4)
    abar = torch.tensor([math.prod(1 - (1e-4 + (0.02 - 1e-4) * i / 999) for i in range(k + 1)) for k in ts])
    mean, var = xt.mean(1), xt.var(1)
    expected_mean = abar.sqrt()[:, None] * x0.reshape(1, 4)
    expected_var = (1 - abar)[:, None].expand(4, 4)
    assert torch.allclose(mean, expected_mean, atol=4 * (expected_var / n).sqrt().max().item() + 1e-4)
    assert torch.allclose(var, expected_var, rtol=0.05, atol=1e-6)
    m, v = q_mean_variance(s, x0.expand(4, -1, -1, -1), ts)
    assert torch.allclose(m.reshape(4, 4), expected_mean, atol=1e-6)
    assert torch.allclose(v.reshape(4, 4), expected_var, atol=1e-6)


def test_timesteps_are_drawn_per_sample_and_uniformly():
    t = sample_timesteps(40000, 10, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(t, minlength=10).float()
    assert t.min() == 0 and t.max() == 9 and (counts / 40000 - 0.1).abs().max() < 0.01
    assert len(torch.unique(sample_timesteps(64, 1000))) > 1


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_matches_the_gaussian_product(schedule):
    """q(x_{t-1} | x_t, x_0) is proportional to
    N(x_t; sqrt(a_t) x_{t-1}, b_t) N(x_{t-1}; sqrt(abar_{t-1}) x_0,
    1 - abar_{t-1}): precision a_t / b_t + 1 / (1 - abar_{t-1}), mean = (sqrt(a_t) x_t / b_t
    + sqrt(abar_{t-1}) x_0 / (1 - abar_{t-1})) / precision. Written here from the betas alone."""
    T = 300
    betas = make_betas(schedule, T).double().numpy()
    s = NoiseSchedule.from_config(schedule, T)
    g = torch.Generator().manual_seed(1)
    ts = torch.tensor([1, 2, 10, 150, 299])
    x0, xt = torch.randn(5, 3, generator=g).double(), torch.randn(5, 3, generator=g).double()
    mean, var, log_var = q_posterior(s, x0.float(), xt.float(), ts)
    for row, t in enumerate(ts.tolist()):
        a_t, b_t = 1 - betas[t], betas[t]
        abar_prev = np.prod(1 - betas[:t])
        precision = a_t / b_t + 1 / (1 - abar_prev)
        expected = np.sqrt(a_t) * xt[row].numpy() / b_t + np.sqrt(abar_prev) * x0[row].numpy() / (
            1 - abar_prev
        )
        np.testing.assert_allclose(mean[row].double().numpy(), expected / precision, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(var[row].double().numpy(), 1 / precision, rtol=1e-4)
        np.testing.assert_allclose(log_var[row].double().numpy(), np.log(1 / precision), rtol=1e-4)
    # at t = 0 (the paper's t = 1) the posterior collapses onto x_0
    m0, v0, _ = q_posterior(s, x0.float(), xt.float(), torch.zeros(5, dtype=torch.long))
    assert torch.allclose(m0, x0.float(), atol=1e-6) and (v0 == 0).all()


def test_noise_and_x0_predictions_convert_back_and_forth():
    s = NoiseSchedule.from_config("cosine", 100)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(8, 1, 4, 4, generator=g), torch.randn(8, 1, 4, 4, generator=g)
    t = torch.arange(0, 96, 12)
    xt = q_sample(s, x0, t, eps)
    assert torch.allclose(predict_x0_from_eps(s, xt, t, eps), x0, atol=2e-4)
    assert torch.allclose(predict_eps_from_x0(s, xt, t, x0), eps, atol=2e-4)
