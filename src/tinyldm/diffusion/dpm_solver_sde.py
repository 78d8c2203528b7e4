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
solver; README: a sampler lever.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tinyldm.diffusion.dpm_solver import DPMSolverMultistepScheduler
from tinyldm.diffusion.solver import randn_from


class DPMSolverSDEMultistepScheduler(DPMSolverMultistepScheduler):
    """SDE-DPM-Solver++(2M): :class:`DPMSolverMultistepScheduler`'s grid and history, the stochastic update.

    ``generator`` (passed to :meth:`step`) draws each step's noise; without one the global RNG does.
    """

    def _update(
        self,
        sample: Tensor,
        sigma_ratio: Tensor,
        alpha_bar_prev: Tensor,
        h: Tensor,
        data_term: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        """``(sigma_t / sigma_s) e^-h x_s + alpha_t (1 - e^-2h) D + sigma_t sqrt(1 - e^-2h) z``, each (B, C, H, W)."""
        noise = randn_from(generator, sample.shape, sample)  # (B, C, H, W)
        kept = -torch.expm1(-2.0 * h)  # 1 - exp(-2h), without cancellation for small h
        return (
            sigma_ratio * torch.exp(-h) * sample
            + alpha_bar_prev**0.5 * kept * data_term
            + (1.0 - alpha_bar_prev) ** 0.5 * kept.sqrt() * noise
        )
