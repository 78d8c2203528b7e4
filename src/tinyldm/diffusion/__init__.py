"""Diffusion core: the training noise schedule, weight-free solvers, classifier-free guidance, sampling.

* :mod:`~tinyldm.diffusion.noise_schedule` - :class:`NoiseSchedule`, the forward process a model is
  trained with (betas, ``add_noise``, training target, ``x0``/``eps`` conversions);
* :mod:`~tinyldm.diffusion.solver` - what the reverse-process solvers share (grid, step output);
* :mod:`~tinyldm.diffusion.ddpm`, :mod:`~tinyldm.diffusion.ddim`, :mod:`~tinyldm.diffusion.dpm_solver` -
  one solver each, built on a ``NoiseSchedule`` (diffusers' ``set_timesteps`` / ``step`` interface);
* :mod:`~tinyldm.diffusion.guidance` - classifier-free guidance and autoguidance arithmetic, their scale checks;
* :mod:`~tinyldm.diffusion.sampling` - :class:`DiffusionSampler`, the inference-time choices and the
  sampling loop;
* :mod:`~tinyldm.diffusion.loss_weighting` - min-SNR loss weights;
* :mod:`~tinyldm.diffusion.timestep_sampling` - which timesteps training draws (uniform, logit-normal);
* :mod:`~tinyldm.diffusion.noise_assignment` - which noise draw each training latent gets (immiscible pairing);
* :mod:`~tinyldm.diffusion.input_perturbation` - training inputs a little noisier than the target assumes.

Nothing here holds learned weights; the denoiser (``tinyldm.unet``) is passed in as a callable.
"""

from tinyldm.diffusion.ddim import DDIMScheduler
from tinyldm.diffusion.ddpm import DDPMScheduler
from tinyldm.diffusion.dpm_solver import DPMSolverMultistepScheduler
from tinyldm.diffusion.dpm_solver_sde import DPMSolverSDEMultistepScheduler
from tinyldm.diffusion.guidance import Denoiser, guided_prediction, validate_guidance_scale
from tinyldm.diffusion.noise_schedule import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    NoiseSchedule,
    from_legacy_config,
    make_betas,
)
from tinyldm.diffusion.sampling import SOLVERS, DiffusionSampler
from tinyldm.diffusion.solver import SchedulerOutput, Solver

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "SOLVERS",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSDEMultistepScheduler",
    "Denoiser",
    "DiffusionSampler",
    "NoiseSchedule",
    "SchedulerOutput",
    "Solver",
    "from_legacy_config",
    "guided_prediction",
    "make_betas",
    "validate_guidance_scale",
]
