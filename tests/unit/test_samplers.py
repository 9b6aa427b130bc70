"""DDPM and DDIM samplers: against algorithm 2 written out, against each other, and with exact noise
predictors for data whose optimal epsilon is analytic (a single point, a Gaussian)."""

from __future__ import annotations

import math

import pytest
import torch

from difgan.diffusion import (
    NoiseSchedule,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    denoiser_eps_fn,
    hook_name,
    posterior_step,
    q_posterior,
    sample_loop,
)


def toy_eps_fn(T: int):
    """A fixed, nonlinear, t-dependent stand-in for a network."""
    w = torch.linspace(-1.0, 1.0, 16).reshape(1, 1, 4, 4)

    def eps_fn(x, t):
        return torch.tanh(0.7 * x + w) * (1 + t.float().reshape(-1, 1, 1, 1) / T)

    return eps_fn


def gaussian_eps_fn(schedule: NoiseSchedule, mu: float, std: float):
    """The exact E[eps | x_t] when x_0 ~ N(mu, std^2 I):
    sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar std^2 + 1 - abar).
    std = 0 is data that is a single point."""

    def eps_fn(x, t):
        abar = schedule.alphas_cumprod_f64[t].reshape(-1, *([1] * (x.ndim - 1)))
        eps = (1 - abar).sqrt() * (x.double() - abar.sqrt() * mu) / (abar * std**2 + 1 - abar)
        return eps.to(x.dtype)

    return eps_fn


# ----------------------------------------------------------------------------- timesteps
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing", "quadratic"])
@pytest.mark.parametrize("steps", [1, 10, 50, 100])
def test_ddim_timesteps_are_distinct_ascending_and_in_range(spacing, steps):
    ts = ddim_timesteps(1000, steps, spacing)
    assert len(ts) == steps and ts == sorted(set(ts)) and 0 <= ts[0] and ts[-1] <= 999


def test_linspace_spacing_starts_at_the_noisiest_step_and_covers_all_steps_when_asked():
    assert ddim_timesteps(1000, 10)[-1] == 999 and ddim_timesteps(1000, 10)[0] == 0
    assert ddim_timesteps(300, 300) == list(range(300))
    assert ddim_timesteps(1000, 10, "leading") == list(range(0, 1000, 100))
    assert ddim_timesteps(1000, 10, "trailing")[-1] == 999
    with pytest.raises(ValueError):
        ddim_timesteps(100, 101)
    with pytest.raises(ValueError):
        ddim_timesteps(100, 10, "geometric")


# ----------------------------------------------------------------------------- single steps
@pytest.mark.parametrize("sigma", ["beta", "posterior"])
def test_ddpm_step_is_algorithm_2(sigma):
    """x_{t-1} = 1/sqrt(a_t) (x_t - b_t / sqrt(1 - abar_t) eps) + sigma_t z, written from the betas."""
    T = 100
    s = NoiseSchedule.from_config("linear", T)
    b = s.betas.double()
    abar = torch.cumprod(1 - b, 0)
    g = torch.Generator().manual_seed(0)
    x, eps, z = (torch.randn(5, 1, 4, 4, generator=g) for _ in range(3))
    t = torch.tensor([0, 1, 30, 60, 99])
    out, _ = ddpm_step(s, x, t, eps, z, sigma=sigma, clip_x0=False)
    for i, ti in enumerate(t.tolist()):
        mean = (x[i].double() - b[ti] / (1 - abar[ti]).sqrt() * eps[i].double()) / (1 - b[ti]).sqrt()
        var = b[ti] if sigma == "beta" else b[ti] * (1 - (abar[ti - 1] if ti else 1.0)) / (1 - abar[ti])
        expected = mean + (var.sqrt() * z[i].double() if ti > 0 else 0)
        assert torch.allclose(out[i].double(), expected, atol=5e-5), ti


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_with_eta_1_on_consecutive_steps_is_the_ddpm_step(clip_x0):
    s = NoiseSchedule.from_config("cosine", 50)
    g = torch.Generator().manual_seed(1)
    x, eps, z = (torch.randn(6, 1, 4, 4, generator=g) for _ in range(3))
    t = torch.tensor([1, 5, 20, 35, 49, 49])
    ddpm, x0_a = ddpm_step(s, x, t, eps, z, sigma="posterior", clip_x0=clip_x0)
    ddim, x0_b = ddim_step(s, x, t, t - 1, eps, z, eta=1.0, clip_x0=clip_x0)
    assert torch.allclose(ddpm, ddim, atol=1e-5) and torch.allclose(x0_a, x0_b)


# ----------------------------------------------------------------------------- whole runs
@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_eta_1_on_all_steps_equals_ddpm_with_posterior_variance(clip_x0):
    T = 60
    s = NoiseSchedule.from_config("linear", T, beta_end=0.2)
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    a = ddpm_sample(
        toy_eps_fn(T), s, x_T, sigma="posterior", clip_x0=clip_x0, generator=torch.Generator().manual_seed(3)
    )
    b = ddim_sample(
        toy_eps_fn(T), s, x_T, steps=T, eta=1.0, clip_x0=clip_x0, generator=torch.Generator().manual_seed(3)
    )
    assert torch.allclose(a, b, atol=1e-4)


def test_ddim_eta_0_is_deterministic_given_the_initial_noise():
    T = 100
    s = NoiseSchedule.from_config("linear", T)
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    runs = [
        ddim_sample(
            toy_eps_fn(T), s, x_T.clone(), steps=20, eta=0.0, generator=torch.Generator().manual_seed(seed)
        )
        for seed in (5, 6)
    ]
    torch.manual_seed(7)
    runs.append(ddim_sample(toy_eps_fn(T), s, x_T.clone(), steps=20, eta=0.0))
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    noisy = [
        ddim_sample(
            toy_eps_fn(T), s, x_T.clone(), steps=20, eta=0.5, generator=torch.Generator().manual_seed(seed)
        )
        for seed in (5, 6)
    ]
    assert not torch.allclose(noisy[0], noisy[1])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize(
    "sampler,kw",
    [
        ("ddpm", {"sigma": "beta"}),
        ("ddpm", {"sigma": "posterior"}),
        ("ddim", {"steps": 10, "eta": 0.0}),
        ("ddim", {"steps": 25, "eta": 1.0}),
    ],
)
def test_exact_noise_predictor_recovers_a_single_point(schedule, sampler, kw):
    T = 200
    s = NoiseSchedule.from_config(schedule, T)
    point = torch.tensor([0.8, -0.3, 0.0, -0.95]).reshape(1, 1, 2, 2)
    x_T = torch.randn(16, 1, 2, 2, generator=torch.Generator().manual_seed(8))
    out = sample_loop(
        gaussian_eps_fn(s, point, 0.0),
        s,
        x_T,
        sampler,
        clip_x0=False,
        generator=torch.Generator().manual_seed(9),
        **kw,
    )
    assert torch.allclose(out, point.expand_as(out), atol=1e-3)


@pytest.mark.parametrize(
    "sampler,kw,tol",
    [
        ("ddpm", {"sigma": "beta"}, 0.03),
        ("ddpm", {"sigma": "posterior"}, 0.03),
        ("ddim", {"steps": 250, "eta": 0.0}, 0.03),
        ("ddim", {"steps": 250, "eta": 1.0}, 0.05),
    ],
)
def test_exact_noise_predictor_recovers_gaussian_data(sampler, kw, tol):
    T, mu, std, n = 1000, 0.3, 0.5, 4000
    s = NoiseSchedule.from_config("linear", T)
    x_T = torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(10))
    out = sample_loop(
        gaussian_eps_fn(s, mu, std),
        s,
        x_T,
        sampler,
        clip_x0=False,
        generator=torch.Generator().manual_seed(11),
        **kw,
    ).flatten()
    se = std / math.sqrt(out.numel())
    assert abs(out.mean().item() - mu) < 5 * se + 0.01
    assert abs(out.std().item() - std) < tol * std
    # the samples are spread like the data, not collapsed onto the mean
    assert abs(((out - mu).abs() < std).float().mean().item() - 0.6827) < 0.03


def test_deterministic_ddim_converges_to_the_data_distribution_as_steps_grow():
    """Few DDIM steps under-disperse (the last jump keeps E[x_0 | x_t]'s shrinkage); the error must fall."""
    T, mu, std = 1000, 0.3, 0.5
    s = NoiseSchedule.from_config("linear", T)
    x_T = torch.randn(2000, 1, 2, 2, generator=torch.Generator().manual_seed(15))
    errors = [
        abs(ddim_sample(gaussian_eps_fn(s, mu, std), s, x_T, steps=k, clip_x0=False).std().item() - std)
        for k in (10, 50, 250)
    ]
    assert errors[0] > errors[1] > errors[2]


def test_guidance_hooks_see_every_step_and_change_the_update():
    T = 30
    s = NoiseSchedule.from_config("linear", T)
    x_T = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(12))
    seen: list[tuple[str, list[int]]] = []
    contexts: list[dict] = []

    def recorder(name, shift):
        def hook(x, t, eps, **context):
            seen.append((name, t.tolist()))
            contexts.append(context)
            return eps + shift

        return hook

    base = ddim_sample(gaussian_eps_fn(s, 0.0, 0.0), s, x_T, steps=5, clip_x0=False)
    guided = ddim_sample(
        gaussian_eps_fn(s, 0.0, 0.0),
        s,
        x_T,
        steps=5,
        clip_x0=False,
        guidance=[recorder("a", 0.0), recorder("b", 0.1)],
    )
    assert [name for name, _ in seen] == ["a", "b"] * 5
    ts = list(reversed(ddim_timesteps(T, 5)))
    assert [t[0] for name, t in seen if name == "a"] == ts
    assert [c["t_prev"] for c in contexts[::2]] == [*ts[1:], -1]  # where each step goes; -1 is x_0
    assert [c["step"] for c in contexts[::2]] == list(range(5))
    assert all(c["num_steps"] == 5 and c["schedule"] is s and c["labels"] is None for c in contexts)
    assert not torch.allclose(base, guided)
    seen.clear()
    contexts.clear()
    labels = torch.tensor([3, 4])
    ddpm_sample(gaussian_eps_fn(s, 0.0, 0.0), s, x_T, guidance=recorder("c", 0.0), labels=labels)
    assert [t[0] for _, t in seen] == list(range(T - 1, -1, -1))
    assert [c["t_prev"] for c in contexts] == list(range(T - 2, -2, -1))
    assert all(c["labels"] is labels and c["num_steps"] == T for c in contexts)


def test_guidance_hooks_have_stable_names():
    def steer(x, t, eps, **context):
        return eps

    class Named:
        name = "discriminator_guidance"

        def __call__(self, x, t, eps, **context):
            return eps

    assert hook_name(steer) == "steer" and hook_name(Named()) == "discriminator_guidance"
    with pytest.raises(ValueError, match="name"):
        hook_name(lambda x, t, eps, **c: eps)


def test_ddim_noise_scale_is_computed_in_float64():
    """s_t = eta sqrt((1-abar_prev)/(1-abar)) sqrt(1 - abar/abar_prev) at small t loses ~1e-4 relative
    accuracy when 1 - abar_t/abar_prev is formed in float32; ours matches a float64 reference to 1e-6."""
    s = NoiseSchedule.from_config("linear", 1000)
    x = torch.zeros(1, 1, 1, 1)
    eps = torch.zeros_like(x)
    noise = torch.ones_like(x)
    out, _ = ddim_step(s, x, 2, 1, eps, noise, eta=1.0, clip_x0=False)
    abar = s.alphas_cumprod_f64
    ref = ((1 - abar[1]) / (1 - abar[2]) * (1 - abar[2] / abar[1])).sqrt()
    assert abs(float(out) / float(ref) - 1) < 1e-6


def test_posterior_step_is_the_one_ddpm_step_uses():
    s = NoiseSchedule.from_config("linear", 50)
    g = torch.Generator().manual_seed(3)
    x, eps, noise = (torch.randn(4, 1, 3, 3, generator=g) for _ in range(3))
    t = torch.tensor([49, 20, 1, 0])
    stepped, x0 = ddpm_step(s, x, t, eps, noise, sigma="posterior", clip_x0=False)
    assert torch.equal(stepped, posterior_step(s, x, t, x0, noise, sigma="posterior"))
    mean, var, _ = q_posterior(s, x0, x, t)
    assert torch.allclose(posterior_step(s, x, t, x0, None), mean)
    assert torch.allclose(stepped[:3], (mean + var.sqrt() * noise)[:3], atol=1e-6)
    assert torch.equal(stepped[3], mean[3])  # no noise at t = 0


@pytest.mark.parametrize("sampler,kw", [("ddpm", {}), ("ddim", {"steps": 10, "eta": 0.5})])
def test_trajectories_hold_the_intermediate_images(sampler, kw):
    T = 40
    s = NoiseSchedule.from_config("linear", T)
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(13))
    g = torch.Generator().manual_seed(14)
    out, traj = sample_loop(toy_eps_fn(T), s, x_T, sampler, return_trajectory=True, generator=g, **kw)
    steps = T if sampler == "ddpm" else kw["steps"]
    assert len(traj.xs) == steps + 1 and len(traj.x0_preds) == steps
    assert traj.timesteps[0] == T - 1 and traj.timesteps[-1] == -1
    assert torch.equal(traj.xs[0], x_T) and torch.equal(traj.xs[-1], out)
    assert traj.stacked().shape == (steps + 1, 2, 1, 4, 4)
    g = torch.Generator().manual_seed(14)
    _, sparse = sample_loop(
        toy_eps_fn(T), s, x_T, sampler, return_trajectory=True, trajectory_stride=4, generator=g, **kw
    )
    assert sparse.timesteps[-1] == -1 and torch.equal(sparse.xs[-1], out)
    assert len(sparse.xs) == steps // 4 + 1 + (steps % 4 != 0)


def test_ddpm_dispatch_refuses_fewer_steps():
    s = NoiseSchedule.from_config("linear", 20)
    with pytest.raises(ValueError, match="sampler=ddim"):
        sample_loop(toy_eps_fn(20), s, torch.zeros(1, 1, 4, 4), "ddpm", steps=5)
    with pytest.raises(ValueError):
        sample_loop(toy_eps_fn(20), s, torch.zeros(1, 1, 4, 4), "euler")


# ----------------------------------------------------------------------------- classifier-free guidance
def test_classifier_free_guidance_combines_conditional_and_null_predictions():
    null = 10

    def net(x, t, labels):  # eps depends on the label: null -> 0, class k -> k
        value = torch.where(labels == null, torch.zeros_like(labels), labels).float()
        return x * 0 + value.reshape(-1, 1, 1, 1)

    x, t, labels = torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long), torch.tensor([1, 2, 3])
    for scale in (0.0, 1.0, 5.0):
        eps = denoiser_eps_fn(net, labels, scale, null)(x, t)
        assert torch.allclose(eps[:, 0, 0, 0], scale * labels.float())  # eps_u + s (eps_c - eps_u), eps_u = 0
    with pytest.raises(ValueError):
        denoiser_eps_fn(net, labels, 3.0, None)
