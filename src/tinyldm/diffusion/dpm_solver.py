"""DPM-Solver++(2M): a second-order multistep ODE sampler for 10-25 steps.

DDIM is a first-order solver of the probability-flow ODE: at 10-20 steps its samples are
noticeably worse than at 50. DPM-Solver++ (Lu et al., 2022, https://arxiv.org/abs/2211.01095)
solves the same ODE in log-SNR time ``lambda = log(alpha / sigma)`` and, in its multistep form, reuses the
previous step's ``x0`` estimate for a second-order correction at no extra network cost.
It is the common default for few-step sampling of latent diffusion models.

Update from ``x_s`` at ``lambda_s`` to ``lambda_t`` (``h = lambda_t - lambda_s``), with
``x0_s`` the model's data estimate and ``x0_p`` the previous step's::

    D = x0_s + (x0_s - x0_p) / (2 r),      r = (lambda_s - lambda_p) / h
    x_t = (sigma_t / sigma_s) * x_s - alpha_t * (exp(-h) - 1) * D

The first step has no history and uses ``D = x0_s`` (first order, equal to DDIM); the last
step lands on ``sigma = 0`` where the update is exactly ``x_t = x0_s``.

Timestep grid (:mod:`~tinyldm.diffusion.timestep_grid`): "trailing" spacing by default,
``round(T - k * T / n) - 1`` for ``k = 0..n-1`` (starts at ``T - 1``, as in Lin et al. 2024,
https://arxiv.org/abs/2305.08891), not DDIM's "leading" grid. On the leading grid the last interval
(``T/n -> 0``) spans a much larger log-SNR step than the one before it, and the multistep extrapolation
overshoots there: with the exact denoiser of Gaussian data, 2M on the leading grid was no better than
DDIM, on the trailing grid it was 3-30x closer to the exact ODE solution at 10-20 steps
(``tests/unit/test_dpm_solver.py`` keeps one such case). ``timestep_spacing="logsnr"`` spaces the
steps evenly in ``lambda`` instead, over a clipped range (docs/experiments/sampler-lever.md).

It agrees with diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
solver_order=2, final_sigmas_type="zero", timestep_spacing="trailing")`` to float32 round-off.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tinyldm.diffusion.noise_schedule import NoiseSchedule
from tinyldm.diffusion.solver import SchedulerOutput, Solver
from tinyldm.diffusion.timestep_grid import half_log_snr, make_grid, validate_spacing


class DPMSolver2M(Solver):
    """DPM-Solver++(2M) (data prediction, midpoint form) on a "trailing" or "logsnr" timestep grid.

    The solver is stateful: each :meth:`step` remembers its ``x0`` estimate for the next
    one, so steps must follow :attr:`timesteps` in order; :meth:`set_timesteps` starts over.
    Deterministic: ``generator`` is accepted for interface parity and unused here (the SDE form,
    :mod:`~tinyldm.diffusion.dpm_solver_sde`, overrides :meth:`_update` and draws its noise from it).

    Args:
        steps: inference steps (``None``: every training timestep).
        timestep_spacing: ``"trailing"`` or ``"logsnr"`` (:mod:`~tinyldm.diffusion.timestep_grid`).
        logsnr_range: ``[lambda_noisy, lambda_clean]`` for ``"logsnr"``; ``None`` for ``"trailing"``.
        clip_sample: clamp each predicted ``x0`` to ``[-clip_sample_range, clip_sample_range]``.
        clip_sample_range: the bound of that clamp.
    """

    name = "dpmpp_2m"

    def __init__(
        self,
        steps: int | None = 20,
        timestep_spacing: str = "trailing",
        logsnr_range: tuple[float, float] | None = None,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
    ) -> None:
        super().__init__(steps, clip_sample, clip_sample_range)
        self.timestep_spacing, self.logsnr_range = validate_spacing(timestep_spacing, logsnr_range)

    def check_schedule(self, schedule: NoiseSchedule) -> int:
        """:meth:`Solver.check_schedule`, and a ``"logsnr"`` grid that does not fit the schedule (a range outside
        its half log-SNR, or too narrow for ``steps`` distinct timesteps) refused naming it."""
        steps = super().check_schedule(schedule)
        if self.logsnr_range is not None and steps < schedule.num_train_timesteps:
            make_grid(schedule.alphas_cumprod, steps, self.timestep_spacing, self.logsnr_range)  # raises if it cannot
        return steps

    def _grid(self, schedule: NoiseSchedule, steps: int) -> list[int]:
        """Descending grid of ``steps`` timesteps on ``schedule``, starting at ``T - 1`` (:mod:`timestep_grid`);
        all ``T`` steps visit every timestep whatever the spacing."""
        T = schedule.num_train_timesteps
        if steps == T:
            return list(range(T - 1, -1, -1))
        return make_grid(schedule.alphas_cumprod, steps, self.timestep_spacing, self.logsnr_range)

    def _start(self, grid: list[int]) -> None:
        """A new trajectory: no history, and each grid point's successor (a later start keeps the same grid)."""
        self._next_timestep = dict(zip(grid, grid[1:] + [-1], strict=True))
        self._previous: tuple[Tensor, Tensor] | None = None  # (lambda, x0 estimate) of the last step
        self._expected_timestep: int | None = None

    def previous_timestep(self, timestep: int) -> int:
        """The next grid point after ``timestep`` (``-1`` after the last one: the clean sample)."""
        if timestep not in self._next_timestep:
            raise ValueError(f"timestep {timestep} is not on this solver's grid {list(self._next_timestep)}")
        return self._next_timestep[timestep]

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
    ) -> SchedulerOutput:
        """One multistep update ``x_t -> x_{t_prev}``.

        Args:
            model_output: network output at ``(sample, timestep)``, ``(B, C, H, W)``.
            timestep: the current grid timestep; must be the one after the previous call's.
            sample: ``x_t``, ``(B, C, H, W)``.
            generator: unused (the solver adds no noise).

        Raises:
            ValueError: ``timestep`` is not the next point of the grid (the solver's history
                would belong to another trajectory).
        """
        schedule = self._bound()
        t = schedule.check_timestep(timestep)
        if self._expected_timestep is not None and t != self._expected_timestep:
            raise ValueError(
                f"DPM-Solver++ is a multistep solver: expected timestep {self._expected_timestep} next, got {t}; "
                "call set_timesteps() to start a new trajectory"
            )
        prev_t = self.previous_timestep(t)
        alpha_bar_t, alpha_bar_prev = schedule.alpha_bars(t, prev_t, sample.device)
        dtype = sample.dtype
        sample = sample.float()  # the update subtracts nearly equal terms: keep it in fp32 under AMP
        pred_x0 = self._maybe_clip(schedule.predict_x0(model_output.float(), sample, alpha_bar_t))  # (B, C, H, W)

        if prev_t < 0:  # sigma_next = 0: the exact limit of the update is the data estimate itself
            self._previous, self._expected_timestep = None, None
            return SchedulerOutput(prev_sample=pred_x0.to(dtype), pred_original_sample=pred_x0)

        lambda_s, lambda_t = half_log_snr(alpha_bar_t), half_log_snr(alpha_bar_prev)
        h = lambda_t - lambda_s
        data_term = pred_x0
        if self._previous is not None:  # second-order correction from the previous estimate
            lambda_p, pred_x0_p = self._previous
            r = (lambda_s - lambda_p) / h
            data_term = pred_x0 + (pred_x0 - pred_x0_p) / (2 * r)
        sigma_ratio = ((1 - alpha_bar_prev) / (1 - alpha_bar_t)) ** 0.5
        prev_sample = self._update(sample, sigma_ratio, alpha_bar_prev, h, data_term, generator, t)  # (B, C, H, W)

        self._previous = (lambda_s, pred_x0)
        self._expected_timestep = prev_t
        return SchedulerOutput(prev_sample=prev_sample.to(dtype), pred_original_sample=pred_x0)

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
        """The ODE step ``x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D``, each (B, C, H, W); no noise.

        ``timestep`` is the step's starting timestep ``s`` (unused here; the SDE form can switch on it).
        """
        return sigma_ratio * sample - alpha_bar_prev**0.5 * torch.expm1(-h) * data_term
