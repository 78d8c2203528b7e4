"""The DDPM (ancestral) solver: the reference sampler, one posterior sample per step.

It mirrors diffusers' ``DDPMScheduler`` (``variance_type="fixed_small"``) closely enough to agree
to float32 round-off (``tests/unit/test_schedulers.py`` checks this).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tinyldm.diffusion.solver import SchedulerOutput, Solver, randn_from


class DDPMSolver(Solver):
    """Ancestral DDPM sampling (Ho et al., 2020, https://arxiv.org/abs/2006.11239), "fixed_small" variance.

    Each step samples ``x_{t_prev} ~ q(x_{t_prev} | x_t, x0_hat)``, the true Gaussian
    posterior given the predicted ``x0``; its variance
    ``(1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t`` is the lower bound of Ho et al.,
    which gives the best samples for models that do not learn the variance. With fewer
    inference steps than ``T`` the same formula is used with
    ``beta_t = 1 - alpha_bar_t / alpha_bar_prev`` of the coarser grid.

    Args:
        steps: inference steps (``None``, the default: every training timestep).
        clip_sample: clamp each predicted ``x0`` to ``[-clip_sample_range, clip_sample_range]``.
        clip_sample_range: the bound of that clamp.
    """

    name = "ddpm"

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
        schedule = self._bound()
        t = schedule.check_timestep(timestep)
        prev_t = self.previous_timestep(t)
        alpha_bar_t, alpha_bar_prev = schedule.alpha_bars(t, prev_t, sample.device)
        beta_bar_t = 1 - alpha_bar_t
        beta_bar_prev = 1 - alpha_bar_prev
        alpha_t = alpha_bar_t / alpha_bar_prev  # per-step alpha of the (possibly coarse) grid
        beta_t = 1 - alpha_t

        pred_x0 = self._maybe_clip(schedule.predict_x0(model_output, sample, alpha_bar_t))  # (B, C, H, W)

        # Posterior mean mu(x_t, x0) = c0 * x0 + ct * x_t (Ho et al. Eq. 7).
        coeff_x0 = (alpha_bar_prev**0.5 * beta_t) / beta_bar_t
        coeff_xt = alpha_t**0.5 * beta_bar_prev / beta_bar_t
        prev_sample = coeff_x0 * pred_x0 + coeff_xt * sample  # (B, C, H, W)

        if t > 0:
            # Clamp: at the first training step the posterior variance is exactly 0.
            variance = torch.clamp(beta_bar_prev / beta_bar_t * beta_t, min=1e-20)
            if variance_noise is None:
                variance_noise = randn_from(generator, model_output.shape, model_output)  # (B, C, H, W)
            prev_sample = prev_sample + variance**0.5 * variance_noise
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_x0)
