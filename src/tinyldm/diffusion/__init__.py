"""Diffusion core: the training noise schedule, weight-free solvers, classifier-free guidance, sampling.

* :mod:`~tinyldm.diffusion.noise_schedule` - :class:`NoiseSchedule`, the forward process a model is
  trained with (betas, ``add_noise``, training target, ``x0``/``eps`` conversions);
* :mod:`~tinyldm.diffusion.solver` - what the reverse-process solvers share (grid, step output);
* :mod:`~tinyldm.diffusion.ddpm`, :mod:`~tinyldm.diffusion.ddim`, :mod:`~tinyldm.diffusion.dpm_solver`,
  :mod:`~tinyldm.diffusion.dpm_solver_sde` - one solver each, its config its constructor, run on a
  ``NoiseSchedule`` (diffusers' ``set_timesteps`` / ``step`` interface);
* :mod:`~tinyldm.diffusion.timestep_grid` - which timesteps a few-step solver visits;
* :mod:`~tinyldm.diffusion.guidance` - classifier-free and adaptive projected guidance, autoguidance;
* :mod:`~tinyldm.diffusion.sampling` - the sampling loop, where a solver and a guidance meet;
* :mod:`~tinyldm.diffusion.loss` - the training loss (:class:`~tinyldm.diffusion.loss.DiffusionLoss`), with
  :mod:`~tinyldm.diffusion.loss_weighting` (min-SNR weights) and :mod:`~tinyldm.diffusion.timestep_sampling`
  (which timesteps training draws: uniform, logit-normal).

Nothing here holds learned weights; the denoiser (``tinyldm.unet``) is passed in as a callable.
"""

from tinyldm.diffusion.ddim import DDIMSolver
from tinyldm.diffusion.ddpm import DDPMSolver
from tinyldm.diffusion.dpm_solver import DPMSolver2M
from tinyldm.diffusion.dpm_solver_sde import DPMSolver2MSDE
from tinyldm.diffusion.guidance import AdaptiveProjectedGuidance, ClassifierFreeGuidance, Denoiser
from tinyldm.diffusion.noise_schedule import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    NoiseSchedule,
    from_legacy_config,
    make_betas,
)
from tinyldm.diffusion.sampling import GUIDANCES, SOLVERS, ConditionedDenoiser, sample
from tinyldm.diffusion.solver import SchedulerOutput, Solver

__all__ = [
    "BETA_SCHEDULES",
    "GUIDANCES",
    "PREDICTION_TYPES",
    "SOLVERS",
    "AdaptiveProjectedGuidance",
    "ClassifierFreeGuidance",
    "ConditionedDenoiser",
    "DDIMSolver",
    "DDPMSolver",
    "DPMSolver2M",
    "DPMSolver2MSDE",
    "Denoiser",
    "NoiseSchedule",
    "SchedulerOutput",
    "Solver",
    "from_legacy_config",
    "make_betas",
    "sample",
]
