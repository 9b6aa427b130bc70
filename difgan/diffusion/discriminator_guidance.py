"""Discriminator guidance (Kim et al. 2023, "Refining Generative Process with Discriminator Guidance in
Score-based Diffusion Models"; seed 002), as plain functions and one sampler hook.

A discriminator D(x_t, t) trained to tell diffused real images (1) from diffused samples of the model (0)
estimates the density ratio p_data,t / p_model,t = D / (1 - D), whose log is D's logit. Adding its gradient
to the model's score, s + w grad log(D / (1 - D)), corrects the score towards the data's. In epsilon space
(eps = -sqrt(1 - abar_t) * score):

    eps_hat = eps - w * sqrt(1 - abar_t) * grad_{x_t} logit D(x_t, t)

With a perfect discriminator and w = 1 the corrected eps is exactly the data's (tested on Gaussians).

- ``DiscriminatorGuidance``: the hook ``(x_t, t, eps, **context) -> eps`` for the DDPM and DDIM samplers,
  with a window of timesteps, a weight and an ensemble of discriminators whose logits or probabilities are
  averaged (seed 002's extension). Gradients are taken with respect to x_t only (``torch.autograd.grad``
  of the logit with respect to x_t alone): no parameter gradients accumulate, no graph outlives a step.
- ``timestep_probabilities``: which t a discriminator trains on: uniform, or Kim et al.'s importance
  sampling, p(t) proportional to beta_t / (1 - abar_t) (the likelihood weighting g^2 / sigma^2 of Song et
  al. 2021, discretised), which favours the small t where guidance acts on details.
- ``expected_calibration_error``: calibration of D's probabilities (the seeds' lesson: D's quality and
  calibration decide whether guidance helps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from difgan.diffusion.schedules import NoiseSchedule

ENSEMBLE_MODES = ("logits", "probabilities")
T_SAMPLING = ("uniform", "importance")

Discriminator = Callable[..., Tensor]  # D(x_t, t, labels) -> (B,) logits


def timestep_probabilities(schedule: NoiseSchedule, mode: str = "uniform") -> Tensor:
    """(T,) float64 probabilities of each 0-based t for discriminator training."""
    T = schedule.num_timesteps
    if mode == "uniform":
        return torch.full((T,), 1.0 / T, dtype=torch.float64)
    if mode == "importance":
        abar = schedule.alphas_cumprod_f64.cpu()
        betas = 1.0 - abar / torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
        w = betas / (1.0 - abar)
        return w / w.sum()
    raise ValueError(f"unknown t sampling {mode!r}; valid: {', '.join(T_SAMPLING)}")


def sample_from(probs: Tensor, n: int, device: torch.device | str = "cpu",
                generator: torch.Generator | None = None) -> Tensor:
    """``n`` 0-based timesteps drawn from ``probs`` (``timestep_probabilities``), as a long tensor."""
    return torch.multinomial(probs.float(), n, replacement=True, generator=generator).to(device)


def combine_logits(logits: Sequence[Tensor], mode: str = "logits") -> Tensor:
    """An ensemble's logit: the mean logit (``logits``) or the logit of the mean probability
    (``probabilities``: log p - log(1 - p) with p the mean sigmoid, computed in log space)."""
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"unknown ensemble mode {mode!r}; valid: {', '.join(ENSEMBLE_MODES)}")
    stacked = torch.stack(list(logits))
    if len(logits) == 1:
        return stacked[0]
    if mode == "logits":
        return stacked.mean(0)
    k = torch.log(torch.tensor(float(len(logits)), dtype=stacked.dtype, device=stacked.device))
    log_p = torch.logsumexp(F.logsigmoid(stacked), 0) - k
    log_q = torch.logsumexp(F.logsigmoid(-stacked), 0) - k
    return log_p - log_q


def logit_gradient(discriminators: Sequence[Discriminator], x_t: Tensor, t: Tensor,
                   labels: Tensor | None = None, ensemble: str = "logits") -> tuple[Tensor, Tensor]:
    """(ensemble logit (B,), its gradient with respect to ``x_t``), detached. Gradients flow to ``x_t``
    only: the discriminators' parameters never get a ``.grad``."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        logit = combine_logits([d(x, t, labels) for d in discriminators], ensemble)
        (grad,) = torch.autograd.grad(logit.sum(), [x])
    return logit.detach(), grad.detach()


def in_window(t: Tensor, num_timesteps: int, t_min: float, t_max: float) -> Tensor:
    """(B,) bool: whether t lies in the window, on the scale tau = (t + 1) / T in (0, 1] (tau = 1 is the
    noisiest step, T - 1; tau = 1 / T the last, t = 0)."""
    tau = (t.double() + 1.0) / num_timesteps
    return (tau >= t_min) & (tau <= t_max)


class DiscriminatorGuidance:
    """Sampler hook adding ``-weight * sqrt(1 - abar_t) * grad logit D`` to eps inside the t window.

    ``discriminators``: one or more callables D(x_t, t, labels) -> logits (in eval mode). ``t_min``,
    ``t_max``: the window as fractions of T (see ``in_window``). ``ensemble``: "logits" or "probabilities".
    Outside the window, or with weight 0, the hook returns ``eps`` itself (bit-exact unguided sampling)."""

    name = "discriminator_guidance"

    def __init__(self, discriminators: Discriminator | Sequence[Discriminator], weight: float = 1.0,
                 t_min: float = 0.0, t_max: float = 1.0, ensemble: str = "logits",
                 sources: Sequence[str] | None = None):
        self.discriminators = [discriminators] if callable(discriminators) else list(discriminators)
        if not self.discriminators:
            raise ValueError("discriminator guidance needs at least one discriminator")
        if ensemble not in ENSEMBLE_MODES:
            raise ValueError(f"unknown ensemble mode {ensemble!r}; valid: {', '.join(ENSEMBLE_MODES)}")
        if not 0.0 <= t_min <= t_max <= 1.0:
            raise ValueError(f"the window needs 0 <= t_min <= t_max <= 1, got {t_min}, {t_max}")
        self.weight, self.t_min, self.t_max = float(weight), float(t_min), float(t_max)
        self.ensemble = ensemble
        self.sources = list(sources) if sources else None
        self.last_logit: Tensor | None = None  # the ensemble's verdict at the last guided step

    def settings(self) -> dict:
        """What the metric protocol records."""
        out = {"name": self.name, "weight": self.weight, "t_min": self.t_min, "t_max": self.t_max,
               "ensemble": self.ensemble, "num_discriminators": len(self.discriminators)}
        if self.sources:
            out["discriminators"] = self.sources
        return out

    def __repr__(self) -> str:
        return f"DiscriminatorGuidance({self.settings()})"

    def __call__(self, x_t: Tensor, t: Tensor, eps: Tensor, *, schedule: NoiseSchedule,
                 labels: Tensor | None = None, **context) -> Tensor:
        if self.weight == 0.0:
            return eps
        mask = in_window(t, schedule.num_timesteps, self.t_min, self.t_max)
        if not bool(mask.any()):
            return eps
        logit, grad = logit_gradient(self.discriminators, x_t, t, labels, self.ensemble)
        self.last_logit = logit
        shape = (-1, *([1] * (x_t.ndim - 1)))
        abar = schedule.alphas_cumprod_f64.to(x_t.device)[t.long()]
        scale = (self.weight * (1.0 - abar).sqrt() * mask.double()).to(eps.dtype).reshape(shape)
        return eps - scale * grad


def expected_calibration_error(probs: Tensor, targets: Tensor, n_bins: int = 10) -> float:
    """ECE of binary predictions: predictions binned by their probability of "real" into ``n_bins`` equal
    bins on [0, 1]; sum over bins of (bin size / n) * |fraction real - mean probability| (Guo et al. 2017,
    reliability-diagram form for one output)."""
    p, y = probs.detach().double().flatten(), targets.detach().double().flatten()
    if p.numel() == 0:
        return float("nan")
    bins = (p * n_bins).long().clamp(max=n_bins - 1)
    total = torch.zeros((), dtype=torch.float64)
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            total = total + sel.double().mean() * (y[sel].mean() - p[sel].mean()).abs()
    return float(total)


def bucket_metrics(t: Tensor, logits: Tensor, targets: Tensor, num_timesteps: int, n_buckets: int = 5,
                   n_bins: int = 10) -> list[dict]:
    """Accuracy, BCE and ECE of a discriminator overall (first entry, bucket "all") and per t bucket: equal
    widths of tau = (t + 1) / T, bucket i covering ((i / k), (i + 1) / k]."""
    logits, targets = logits.detach().float().flatten(), targets.detach().float().flatten()
    tau = (t.detach().double().flatten() + 1.0) / num_timesteps
    idx = (tau * n_buckets).ceil().long().clamp(1, n_buckets) - 1

    def stats(sel: Tensor, name: str, lo: float, hi: float) -> dict:
        n = int(sel.sum())
        if n == 0:
            return {"bucket": name, "tau": [lo, hi], "n": 0, "acc": None, "bce": None, "ece": None}
        lg, y = logits[sel], targets[sel]
        return {"bucket": name, "tau": [lo, hi], "n": n,
                "acc": float(((lg > 0).float() == y).float().mean()),
                "bce": float(F.binary_cross_entropy_with_logits(lg, y)),
                "ece": expected_calibration_error(torch.sigmoid(lg), y, n_bins)}

    out = [stats(torch.ones_like(idx, dtype=torch.bool), "all", 0.0, 1.0)]
    for i in range(n_buckets):
        out.append(stats(idx == i, str(i), i / n_buckets, (i + 1) / n_buckets))
    return out
