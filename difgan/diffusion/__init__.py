"""Diffusion math shared by every model that noises or denoises: schedules, the forward process and its
posterior, and the DDPM/DDIM samplers. Plain torch, no Lightning."""

from difgan.diffusion.guidance import denoiser_eps_fn
from difgan.diffusion.process import (
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_mean_variance,
    q_posterior,
    q_sample,
    sample_timesteps,
)
from difgan.diffusion.samplers import (
    SAMPLERS,
    SIGMAS,
    SPACINGS,
    EpsFn,
    Guidance,
    Trajectory,
    apply_guidance,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    guidance_hooks,
    hook_name,
    posterior_step,
    sample_loop,
)
from difgan.diffusion.schedules import SCHEDULES, NoiseSchedule, cosine_betas, linear_betas, make_betas

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "SIGMAS",
    "SPACINGS",
    "EpsFn",
    "Guidance",
    "NoiseSchedule",
    "Trajectory",
    "apply_guidance",
    "guidance_hooks",
    "hook_name",
    "posterior_step",
    "cosine_betas",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_sample",
    "ddpm_step",
    "denoiser_eps_fn",
    "linear_betas",
    "make_betas",
    "predict_eps_from_x0",
    "predict_x0_from_eps",
    "q_mean_variance",
    "q_posterior",
    "q_sample",
    "sample_loop",
    "sample_timesteps",
]
