"""The DDPM (ancestral) and DDIM schedulers, and the registry samplers pick from.

The shared forward process, inference grid and config handling live in
:mod:`tinyldm.diffusion.scheduler_base`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tinyldm.diffusion.dpm_solver import DPMSolverMultistepScheduler
from tinyldm.diffusion.scheduler_base import SchedulerOutput, _NoiseScheduler, _is_number, _randn


class DDPMScheduler(_NoiseScheduler):
    """Ancestral DDPM sampling (Ho et al., 2020) with the "fixed_small" posterior variance.

    Each step samples ``x_{t_prev} ~ q(x_{t_prev} | x_t, x0_hat)``, the true Gaussian
    posterior given the predicted ``x0``; its variance
    ``(1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t`` is the lower bound of Ho et al.,
    which gives the best samples for models that do not learn the variance. With fewer
    inference steps than ``T`` the same formula is used with
    ``beta_t = 1 - alpha_bar_t / alpha_bar_prev`` of the coarser grid.

    Args: see :class:`_NoiseScheduler`.
    """

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        variance_noise: Tensor | None = None,
    ) -> SchedulerOutput:
        """One ancestral step ``x_t -> x_{t_prev}``.

        Args:
            model_output: network output at ``(sample, timestep)``, ``(B, C, H, W)``.
            timestep: current timestep (int or 0-dim tensor), normally from :attr:`timesteps`.
            sample: ``x_t``, ``(B, C, H, W)``.
            generator: source of the step's noise (drawn with ``torch.randn`` on the
                generator's device, so a CPU generator reproduces diffusers).
            variance_noise: explicit standard-normal noise instead of drawing it; takes
                precedence over ``generator``.

        No noise is added at ``t = 0``: the last step returns the posterior mean.
        """
        t = self._check_timestep(timestep)
        prev_t = self.previous_timestep(t)
        alpha_bar_t, alpha_bar_prev = self._alpha_bars(t, prev_t, sample.device)
        beta_bar_t = 1 - alpha_bar_t
        beta_bar_prev = 1 - alpha_bar_prev
        alpha_t = alpha_bar_t / alpha_bar_prev  # per-step alpha of the (possibly coarse) grid
        beta_t = 1 - alpha_t

        pred_x0 = self._maybe_clip(self._pred_x0(model_output, sample, alpha_bar_t))  # (B, C, H, W)

        # Posterior mean mu(x_t, x0) = c0 * x0 + ct * x_t (Ho et al. Eq. 7).
        coeff_x0 = (alpha_bar_prev**0.5 * beta_t) / beta_bar_t
        coeff_xt = alpha_t**0.5 * beta_bar_prev / beta_bar_t
        prev_sample = coeff_x0 * pred_x0 + coeff_xt * sample  # (B, C, H, W)

        if t > 0:
            # Clamp: at the first training step the posterior variance is exactly 0.
            variance = torch.clamp(beta_bar_prev / beta_bar_t * beta_t, min=1e-20)
            if variance_noise is None:
                variance_noise = _randn(model_output.shape, model_output, generator)
            prev_sample = prev_sample + variance**0.5 * variance_noise
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_x0)


class DDIMScheduler(_NoiseScheduler):
    """DDIM sampling (Song et al., 2021): few-step and, with ``eta = 0``, deterministic.

    DDIM reuses a DDPM-trained network but takes large jumps along the grid set by
    :meth:`set_timesteps`. ``eta`` interpolates between the deterministic ODE-like
    sampler (``eta = 0``) and DDPM-like ancestral noise (``eta = 1``).

    Args:
        eta: default stochasticity for :meth:`step` (>= 0).
        Others: see :class:`_NoiseScheduler`.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "epsilon",
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        eta: float = 0.0,
    ) -> None:
        _check_eta(eta)
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            prediction_type=prediction_type,
            clip_sample=clip_sample,
            clip_sample_range=clip_sample_range,
        )
        self.eta = float(eta)

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
            eta: overrides the constructor's ``eta`` for this step.
            variance_noise: explicit ``z`` (takes precedence over ``generator``), e.g. to
                compare against another implementation with identical noise.
        """
        eta = self.eta if eta is None else _check_eta(eta)
        t = self._check_timestep(timestep)
        prev_t = self.previous_timestep(t)
        alpha_bar_t, alpha_bar_prev = self._alpha_bars(t, prev_t, sample.device)
        beta_bar_t = 1 - alpha_bar_t
        beta_bar_prev = 1 - alpha_bar_prev

        pred_x0 = self._pred_x0(model_output, sample, alpha_bar_t)  # (B, C, H, W)
        # eps is derived from the *unclipped* x0, as diffusers does by default.
        pred_eps = self._pred_eps(model_output, sample, alpha_bar_t, pred_x0)  # (B, C, H, W)
        pred_x0 = self._maybe_clip(pred_x0)

        variance = (beta_bar_prev / beta_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)
        std = eta * variance**0.5
        # Clamp guards eta > 1 (or round-off at eta = 1) from a negative square root.
        direction = torch.clamp(1 - alpha_bar_prev - std**2, min=0.0) ** 0.5 * pred_eps  # (B, C, H, W)
        prev_sample = alpha_bar_prev**0.5 * pred_x0 + direction  # (B, C, H, W)

        if eta > 0:
            if variance_noise is None:
                variance_noise = _randn(model_output.shape, model_output, generator)
            prev_sample = prev_sample + std * variance_noise
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_x0)


def _check_eta(eta: Any) -> float:
    if not _is_number(eta) or not (0.0 <= eta < math.inf):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    return float(eta)


SCHEDULERS: dict[str, type[_NoiseScheduler]] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
}
