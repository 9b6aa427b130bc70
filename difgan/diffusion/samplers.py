"""Samplers: ancestral DDPM (Ho et al. 2020, algorithm 2) and DDIM (Song et al. 2021, eq. 12).

Both take an ``eps_fn(x_t, t) -> predicted noise`` (the network with its labels and classifier-free guidance
already folded in, see ``difgan.diffusion.guidance``), the ``NoiseSchedule``, and the initial noise x_T.
Both accept ``guidance``: one hook ``(x_t, t, eps, **context) -> eps`` or a list of them, applied in order
after the network and before the update. ``context`` holds ``labels``, ``schedule``, ``t_prev`` (the
timestep the step goes to; -1 for x_0), ``step`` (0-based index of the sampling step) and ``num_steps``.
That is where later methods (discriminator guidance, Kim et al. 2023) change the score without touching
the samplers; a hook that needs gradients wraps itself in ``torch.enable_grad()``. The metric protocol
records hooks by ``hook_name``: a ``name`` attribute, else the function's name (lambdas have none).
The samplers do not turn gradients off themselves (callers that only sample use ``torch.no_grad()``;
fine-tuning methods may backpropagate through a chain).

Randomness: every draw (per-step noise) uses ``generator`` when given (on the generator's device, then
moved to x_T's, so a CPU generator can seed a GPU run). A step draws noise only when it adds noise (DDPM:
t > 0; DDIM: eta > 0 and not the last step), so DDIM with eta=1 on all T steps consumes the same random
numbers as DDPM with ``sigma="posterior"`` and returns the same images.

Timesteps are 0-based (see ``schedules``). DDIM timestep spacings, for S steps out of T:
- ``linspace`` (default): round(linspace(0, T-1, S)): starts at the noisiest step T-1, ends at 0, and for
  S = T is every step;
- ``leading``: 0, c, 2c, ... with c = T // S (Song et al.'s "uniform"; starts below T-1);
- ``trailing``: T-1, T-1-c, ..., evenly spaced down from the noisiest step (Lin et al. 2024);
- ``quadratic``: round(linspace(0, sqrt(0.8 T), S)^2) (Song et al.'s CIFAR-10 choice), each step moved up
  to one past its predecessor where rounding would repeat it (many steps near t = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from difgan.diffusion.process import predict_eps_from_x0, predict_x0_from_eps, q_posterior
from difgan.diffusion.schedules import NoiseSchedule

EpsFn = Callable[[Tensor, Tensor], Tensor]
Guidance = Callable[..., Tensor]  # (x_t, t, eps, *, labels, schedule, t_prev, step, num_steps) -> eps

SAMPLERS = ("ddpm", "ddim")
SIGMAS = ("beta", "posterior")
SPACINGS = ("linspace", "leading", "trailing", "quadratic")


@dataclass
class Trajectory:
    """Snapshots of a sampling run. ``timesteps[i]`` is the 0-based t of ``xs[i]`` (the first entry is x_T;
    -1 marks the final x_0); ``x0_preds[i]`` is the network's estimate of x_0 made at
    ``pred_timesteps[i]``."""

    timesteps: list[int] = field(default_factory=list)
    xs: list[Tensor] = field(default_factory=list)
    pred_timesteps: list[int] = field(default_factory=list)
    x0_preds: list[Tensor] = field(default_factory=list)

    def stacked(self) -> Tensor:
        """The x_t snapshots as one tensor (len, B, C, H, W)."""
        return torch.stack(self.xs)


def guidance_hooks(guidance: Guidance | Sequence[Guidance] | None) -> list[Guidance]:
    if guidance is None:
        return []
    return [guidance] if callable(guidance) else list(guidance)


def hook_name(hook: Guidance) -> str:
    """A stable name for the metric protocol: ``hook.name``, else the function's or class's name."""
    name = getattr(hook, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(hook, "__name__", None) or type(hook).__name__
    if name == "<lambda>":
        raise ValueError("a guidance hook needs a name for the metric protocol: use a def, or give the "
                         "callable a `name` attribute")
    return name


def apply_guidance(
    guidance: Guidance | Sequence[Guidance] | None, x: Tensor, t: Tensor, eps: Tensor, **context
) -> Tensor:
    """Apply the hooks in order; ``context``: labels, schedule, t_prev, step, num_steps."""
    for hook in guidance_hooks(guidance):
        eps = hook(x, t, eps, **context)
    return eps


def _timestep_batch(t: int | Tensor, x: Tensor) -> Tensor:
    if isinstance(t, Tensor) and t.ndim == 1:
        return t.to(device=x.device, dtype=torch.long)
    return torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)


def _x0_and_eps(
    schedule: NoiseSchedule, x: Tensor, t: Tensor, eps: Tensor, clip_x0: bool
) -> tuple[Tensor, Tensor]:
    x0 = predict_x0_from_eps(schedule, x, t, eps)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = predict_eps_from_x0(schedule, x, t, x0)
    return x0, eps


def posterior_step(
    schedule: NoiseSchedule,
    x: Tensor,
    t: Tensor,
    x0: Tensor,
    noise: Tensor | None,
    sigma: str = "posterior",
) -> Tensor:
    """x_{t-1} drawn from q(x_{t-1} | x_t, x_0 = ``x0``): the posterior mean plus sigma_t * ``noise``.

    Shared by every model that denoises in steps: eps-predicting samplers pass the x_0 their eps implies,
    x0-predicting generators (DDGAN) their own. ``sigma="posterior"`` is the true posterior's beta-tilde_t,
    ``"beta"`` is beta_t (Ho et al.'s choice for CIFAR-10). ``noise`` may be None (the mean), and is not
    added at t = 0."""
    if sigma not in SIGMAS:
        raise ValueError(f"sigma must be one of {SIGMAS}, got {sigma!r}")
    mean, post_var, _ = q_posterior(schedule, x0, x, t)
    if noise is None:
        return mean
    var = post_var if sigma == "posterior" else schedule.extract("betas", t, x.ndim, x.dtype)
    nonzero = (t > 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return mean + nonzero * var.sqrt() * noise


def ddpm_step(
    schedule: NoiseSchedule,
    x: Tensor,
    t: int | Tensor,
    eps: Tensor,
    noise: Tensor | None,
    sigma: str = "beta",
    clip_x0: bool = True,
) -> tuple[Tensor, Tensor]:
    """One ancestral step x_t -> x_{t-1}: the posterior mean at the predicted x_0, plus sigma_t * noise.

    ``sigma="beta"`` is sigma_t^2 = beta_t (Ho et al.'s choice for CIFAR-10), ``"posterior"`` is beta-tilde_t.
    Without clipping the mean equals algorithm 2's 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps).
    ``noise`` is ignored (may be None) at t = 0. Returns (x_{t-1}, predicted x_0).
    """
    tb = _timestep_batch(t, x)
    x0, _ = _x0_and_eps(schedule, x, tb, eps, clip_x0)
    return posterior_step(schedule, x, tb, x0, noise, sigma), x0


def ddim_step(
    schedule: NoiseSchedule,
    x: Tensor,
    t: int | Tensor,
    t_prev: int | Tensor,
    eps: Tensor,
    noise: Tensor | None,
    eta: float = 0.0,
    clip_x0: bool = True,
) -> tuple[Tensor, Tensor]:
    """One DDIM step x_t -> x_{t_prev} (``t_prev`` = -1: to x_0, alpha-bar 1), Song et al. eq. 12:

    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps + s z,
    s = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).

    With clipping, eps is recomputed from the clipped x_0 so the two terms stay consistent.
    Returns (x_{t_prev}, predicted x_0).
    """
    tb = _timestep_batch(t, x)
    tp = _timestep_batch(t_prev, x)
    x0, eps = _x0_and_eps(schedule, x, tb, eps, clip_x0)
    # Schedule quantities in float64 (1 - abar_t / abar_prev in float32 loses ~1e-4 relative at small t),
    # cast once the combination is formed.
    shape = (-1, *([1] * (x.ndim - 1)))
    abar_all = schedule.alphas_cumprod_f64.to(x.device)
    abar = abar_all[tb]
    abar_prev = torch.where(tp >= 0, abar_all[tp.clamp(min=0)], torch.ones((), dtype=abar.dtype,
                                                                           device=x.device))
    s64 = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp(min=0).sqrt()
    dir64 = (1 - abar_prev - s64**2).clamp(min=0).sqrt()
    s, direction = s64.to(x.dtype).reshape(shape), dir64.to(x.dtype).reshape(shape)
    out = abar_prev.sqrt().to(x.dtype).reshape(shape) * x0 + direction * eps
    if noise is not None and eta > 0:
        out = out + s * noise
    return out, x0


def ddim_timesteps(num_timesteps: int, steps: int, spacing: str = "linspace") -> list[int]:
    """``steps`` distinct 0-based timesteps out of ``num_timesteps``, ascending (see the module docstring)."""
    T = int(num_timesteps)
    if not 1 <= steps <= T:
        raise ValueError(f"sampling_steps must lie in [1, {T}], got {steps}")
    if spacing == "linspace":
        ts = np.round(np.linspace(0, T - 1, steps)) if steps > 1 else np.array([T - 1])
    elif spacing == "leading":
        ts = np.arange(0, steps) * (T // steps)
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps)) - 1
    elif spacing == "quadratic":
        ts = np.round(np.linspace(0, np.sqrt(T * 0.8), steps) ** 2).astype(np.int64)
        for i in range(1, len(ts)):
            ts[i] = max(ts[i], ts[i - 1] + 1)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    out = sorted(int(v) for v in ts)
    if len(set(out)) != len(out) or out[0] < 0 or out[-1] >= T:
        raise ValueError(
            f"spacing {spacing!r} gives repeated or out-of-range timesteps for {steps} of {T} "
            "steps; use spacing 'linspace'"
        )
    return out


def randn_like_on(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like ``x`` on ``x``'s device, drawn from ``generator`` on whatever device
    the generator lives on (a CPU generator may seed a GPU run)."""
    if generator is None:
        return torch.randn(x.shape, device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, device=generator.device, dtype=x.dtype, generator=generator).to(x.device)


def _record(traj: Trajectory | None, i: int, stride: int, last: bool, t: int, x: Tensor) -> None:
    if traj is not None and (i % stride == 0 or last):
        traj.timesteps.append(t)
        traj.xs.append(x.detach().clone())


def ddpm_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    sigma: str = "beta",
    clip_x0: bool = True,
    guidance: Guidance | Sequence[Guidance] | None = None,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    trajectory_stride: int = 1,
) -> Tensor | tuple[Tensor, Trajectory]:
    """Ancestral sampling through all T steps (Ho et al. algorithm 2). Returns x_0, and the trajectory
    (every ``trajectory_stride``-th x_t plus the last) when asked."""
    traj = Trajectory() if return_trajectory else None
    T = schedule.num_timesteps
    x = x_T
    _record(traj, 0, trajectory_stride, False, T - 1, x)
    for i, t in enumerate(range(T - 1, -1, -1), start=1):
        tb = _timestep_batch(t, x)
        eps = apply_guidance(guidance, x, tb, eps_fn(x, tb), labels=labels, schedule=schedule,
                             t_prev=t - 1, step=i - 1, num_steps=T)
        noise = randn_like_on(x, generator) if t > 0 else None
        x, x0 = ddpm_step(schedule, x, tb, eps, noise, sigma=sigma, clip_x0=clip_x0)
        if traj is not None and (i % trajectory_stride == 0 or t == 0):
            traj.pred_timesteps.append(t)
            traj.x0_preds.append(x0.detach().clone())
        _record(traj, i, trajectory_stride, t == 0, t - 1, x)
    return (x, traj) if traj is not None else x


def ddim_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "linspace",
    clip_x0: bool = True,
    guidance: Guidance | Sequence[Guidance] | None = None,
    labels: Tensor | None = None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    trajectory_stride: int = 1,
) -> Tensor | tuple[Tensor, Trajectory]:
    """DDIM sampling on ``steps`` timesteps; ``eta`` = 0 is deterministic given x_T, ``eta`` = 1 on all steps
    is the ancestral sampler with posterior variance."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    ts = ddim_timesteps(schedule.num_timesteps, steps, spacing)
    traj = Trajectory() if return_trajectory else None
    x = x_T
    _record(traj, 0, trajectory_stride, False, ts[-1], x)
    pairs = list(zip(reversed(ts), [*reversed(ts[:-1]), -1]))
    for i, (t, t_prev) in enumerate(pairs, start=1):
        tb = _timestep_batch(t, x)
        eps = apply_guidance(guidance, x, tb, eps_fn(x, tb), labels=labels, schedule=schedule,
                             t_prev=t_prev, step=i - 1, num_steps=len(pairs))
        noise = randn_like_on(x, generator) if eta > 0 and t_prev >= 0 else None
        x, x0 = ddim_step(schedule, x, tb, t_prev, eps, noise, eta=eta, clip_x0=clip_x0)
        if traj is not None and (i % trajectory_stride == 0 or t_prev < 0):
            traj.pred_timesteps.append(t)
            traj.x0_preds.append(x0.detach().clone())
        _record(traj, i, trajectory_stride, t_prev < 0, t_prev, x)
    return (x, traj) if traj is not None else x


def sample_loop(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    x_T: Tensor,
    sampler: str = "ddim",
    *,
    steps: int | None = None,
    eta: float = 0.0,
    sigma: str = "beta",
    spacing: str = "linspace",
    **kwargs,
) -> Tensor | tuple[Tensor, Trajectory]:
    """Dispatch to ``ddpm_sample`` (all T steps; ``steps`` must be None or T) or ``ddim_sample``."""
    if sampler == "ddpm":
        if steps is not None and steps != schedule.num_timesteps:
            raise ValueError(
                f"the ddpm sampler runs all {schedule.num_timesteps} steps; for fewer, use "
                "sampler=ddim (eta=1 is the strided ancestral sampler)"
            )
        return ddpm_sample(eps_fn, schedule, x_T, sigma=sigma, **kwargs)
    if sampler == "ddim":
        return ddim_sample(
            eps_fn, schedule, x_T, steps=steps or schedule.num_timesteps, eta=eta, spacing=spacing, **kwargs
        )
    raise ValueError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
