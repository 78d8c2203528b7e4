"""Diffusion core: noise schedules, weight-free schedulers, classifier-free guidance, sampling.

Nothing here holds learned weights; the denoiser (``tinyldm.unet``) is passed in as a callable.
"""

from tinyldm.diffusion.dpm_solver import DPMSolverMultistepScheduler
from tinyldm.diffusion.guidance import Denoiser, guided_prediction, validate_guidance_scale
from tinyldm.diffusion.sampling import DiffusionSampler
from tinyldm.diffusion.scheduler_base import PREDICTION_TYPES, SchedulerOutput
from tinyldm.diffusion.schedulers import SCHEDULERS, DDIMScheduler, DDPMScheduler
from tinyldm.diffusion.schedules import BETA_SCHEDULES, make_betas

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "SCHEDULERS",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "Denoiser",
    "DiffusionSampler",
    "SchedulerOutput",
    "guided_prediction",
    "make_betas",
    "validate_guidance_scale",
]
