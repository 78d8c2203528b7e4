"""SDE-DPM-Solver++(2M): the stochastic form of DPM-Solver++(2M), fresh noise at every step.

The deterministic solver (:mod:`~tinyldm.diffusion.dpm_solver`) follows the probability-flow ODE, so
an error the model makes early in a trajectory is carried to the end. Sampling the reverse SDE instead
adds noise at each step and takes part of the current sample away, which lets later steps correct
earlier errors: Karras et al. 2022 ("Elucidating the design space of diffusion-based generative
models", https://arxiv.org/abs/2206.00364, section 4) find that this stochasticity helps imperfect,
not fully trained models, and hurts converged ones. The second-order multistep update in half log-SNR
time ``lambda`` (``h = lambda_t - lambda_s``; Lu et al. 2022, https://arxiv.org/abs/2211.01095)::

    x_t = (sigma_t / sigma_s) exp(-h) x_s + alpha_t (1 - exp(-2h)) D + sigma_t sqrt(1 - exp(-2h)) z

with the same data term ``D`` as the ODE solver (first order at the first step) and ``z ~ N(0, I)``
drawn from the sampling generator, so a seed still fixes the samples. It is diffusers'
``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_type="midpoint")``, and what
image UIs call "DPM++ 2M SDE". Same grid options and the same network calls per step as the ODE
solver; docs/experiments/sampler-lever.md.

``noise_interval=[t_low, t_high]`` adds the noise only on the steps that start at a timestep in that band and
takes the ODE update on the others: Karras et al.'s ``S_tmin`` / ``S_tmax`` window. Both updates move the
sample between the same marginals, so any mix of them samples the same distribution; where the noise goes
changes which errors it can correct (docs/experiments/sampler-lever.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tinyldm.diffusion.dpm_solver import DPMSolver2M
from tinyldm.diffusion.solver import randn_from, validate_interval


class DPMSolver2MSDE(DPMSolver2M):
    """SDE-DPM-Solver++(2M): :class:`~tinyldm.diffusion.dpm_solver.DPMSolver2M`'s grid and history, the
    stochastic update.

    ``generator`` (passed to :meth:`step`) draws each step's noise; without one the global RNG does.

    Args:
        steps: inference steps (``None``: every training timestep).
        timestep_spacing: ``"trailing"`` or ``"logsnr"`` (:mod:`~tinyldm.diffusion.timestep_grid`).
        logsnr_range: ``[lambda_noisy, lambda_clean]`` for ``"logsnr"``; ``None`` for ``"trailing"``.
        noise_interval: ``[t_low, t_high]`` (inclusive): only steps starting at such a timestep add noise, the
            others take the deterministic update and draw nothing; ``None``: every step adds noise.
        clip_sample: clamp each predicted ``x0`` to ``[-clip_sample_range, clip_sample_range]``.
        clip_sample_range: the bound of that clamp.
    """

    name = "dpmpp_2m_sde"

    def __init__(
        self,
        steps: int | None = 20,
        timestep_spacing: str = "trailing",
        logsnr_range: tuple[float, float] | None = None,
        noise_interval: tuple[int, int] | None = None,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
    ) -> None:
        super().__init__(steps, timestep_spacing, logsnr_range, clip_sample, clip_sample_range)
        self.noise_interval = validate_interval("noise_interval", noise_interval, "[550, 999]")

    def _update(
        self,
        sample: Tensor,
        sigma_ratio: Tensor,
        alpha_bar_prev: Tensor,
        h: Tensor,
        data_term: Tensor,
        generator: torch.Generator | None,
        timestep: int,
    ) -> Tensor:
        """``(sigma_t / sigma_s) e^-h x_s + alpha_t (1 - e^-2h) D + sigma_t sqrt(1 - e^-2h) z``, each (B, C, H, W).

        Outside ``noise_interval`` the ODE update of the same step instead.
        """
        if self.noise_interval is not None and not self.noise_interval[0] <= timestep <= self.noise_interval[1]:
            return super()._update(sample, sigma_ratio, alpha_bar_prev, h, data_term, generator, timestep)
        noise = randn_from(generator, sample.shape, sample)  # (B, C, H, W)
        kept = -torch.expm1(-2.0 * h)  # 1 - exp(-2h), without cancellation for small h
        return (
            sigma_ratio * torch.exp(-h) * sample
            + alpha_bar_prev**0.5 * kept * data_term
            + (1.0 - alpha_bar_prev) ** 0.5 * kept.sqrt() * noise
        )
