"""The DDIM solver: few-step and, with ``eta = 0``, deterministic sampling of a DDPM-trained model.

It mirrors diffusers' ``DDIMScheduler`` (``timestep_spacing="leading"``, ``steps_offset=0``,
``set_alpha_to_one=True``) closely enough to agree to float32 round-off
(``tests/unit/test_schedulers.py`` checks this).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tinyldm.diffusion.noise_schedule import _is_number
from tinyldm.diffusion.solver import SchedulerOutput, Solver, randn_from


def validate_eta(eta: Any) -> float:
    """``eta`` as a float, or ``ValueError`` naming it unless it is a finite number >= 0."""
    if not _is_number(eta) or not (0.0 <= eta < math.inf):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    return float(eta)


class DDIMSolver(Solver):
    """DDIM sampling (Song et al., 2021, https://arxiv.org/abs/2010.02502).

    DDIM reuses a DDPM-trained network but takes large jumps along the grid set by
    :meth:`set_timesteps`. ``eta`` interpolates between the deterministic ODE-like
    sampler (``eta = 0``) and DDPM-like ancestral noise (``eta = 1``).

    Args:
        steps: inference steps (``None``: every training timestep).
        eta: stochasticity of every :meth:`step` (>= 0).
        clip_sample: clamp each predicted ``x0``; see :class:`~tinyldm.diffusion.solver.Solver`.
        clip_sample_range: the bound of that clamp.
    """

    name = "ddim"

    def __init__(
        self, steps: int | None = 50, eta: float = 0.0, clip_sample: bool = False, clip_sample_range: float = 1.0
    ) -> None:
        super().__init__(steps, clip_sample=clip_sample, clip_sample_range=clip_sample_range)
        self.eta = validate_eta(eta)

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        eta: float | None = None,
        variance_noise: Tensor | None = None,
    ) -> SchedulerOutput:
        """One DDIM step ``x_t -> x_{t_prev}`` (Song et al. Eq. 12).

        ``x_prev = sqrt(alpha_bar_prev) * x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) * eps_hat + sigma * z``
        with ``sigma = eta * sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev))``.

        Args:
            model_output: network output at ``(sample, timestep)``, ``(B, C, H, W)``.
            timestep: current timestep, normally from :attr:`timesteps`.
            sample: ``x_t``, ``(B, C, H, W)``.
            generator: source of ``z`` when ``eta > 0``.
            eta: overrides the constructor's ``eta`` for this step (diffusers' signature, used to compare
                against it step by step).
            variance_noise: explicit ``z`` (takes precedence over ``generator``), e.g. to
                compare against another implementation with identical noise.
        """
        eta = self.eta if eta is None else validate_eta(eta)
        schedule = self._bound()
        t = schedule.check_timestep(timestep)
        prev_t = self.previous_timestep(t)
        alpha_bar_t, alpha_bar_prev = schedule.alpha_bars(t, prev_t, sample.device)
        beta_bar_t = 1 - alpha_bar_t
        beta_bar_prev = 1 - alpha_bar_prev

        pred_x0 = schedule.predict_x0(model_output, sample, alpha_bar_t)  # (B, C, H, W)
        # eps is derived from the *unclipped* x0, as diffusers does by default.
        pred_eps = schedule.predict_eps(model_output, sample, alpha_bar_t, pred_x0)  # (B, C, H, W)
        pred_x0 = self._maybe_clip(pred_x0)

        variance = (beta_bar_prev / beta_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)
        std = eta * variance**0.5
        # Clamp guards eta > 1 (or round-off at eta = 1) from a negative square root.
        direction = torch.clamp(1 - alpha_bar_prev - std**2, min=0.0) ** 0.5 * pred_eps  # (B, C, H, W)
        prev_sample = alpha_bar_prev**0.5 * pred_x0 + direction  # (B, C, H, W)

        if eta > 0:
            if variance_noise is None:
                variance_noise = randn_from(generator, model_output.shape, model_output)  # (B, C, H, W)
            prev_sample = prev_sample + std * variance_noise
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_x0)
