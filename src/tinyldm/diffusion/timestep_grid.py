"""Inference timestep grids: which of the ``T`` training timesteps a few-step solver visits.

A solver with ``n`` steps must choose ``n`` of the ``T`` training timesteps, and where it puts them
sets most of its discretization error. Two grids:

* ``trailing``: evenly spaced in ``t``, ``round(T - k * T / n) - 1`` for ``k = 0..n-1`` (starts at
  ``T - 1``; Lin et al. 2024, https://arxiv.org/abs/2305.08891). Even in ``t`` is not even in
  noise level: under the cosine schedule the last 50 of 1,000 timesteps span the half log-SNR
  ``lambda = log(alpha / sigma)`` from -2.6 down to -9.9, so a 20-step trailing grid crosses that
  whole range in one first-order step.
* ``logsnr``: the pure-noise start ``T - 1``, then ``n - 1`` timesteps evenly spaced in ``lambda``
  over ``logsnr_range = [lambda_noisy, lambda_clean]``, each the training timestep nearest to its
  ``lambda``. DPM-Solver (Lu et al. 2022, https://arxiv.org/abs/2206.00927) solves the
  ODE in ``lambda`` and recommends steps uniform in it; the noisy end is clipped (as diffusers'
  ``lambda_min_clipped`` does for the cosine schedule): below about ``lambda = -4`` the signal is
  under 0.03 % of ``x_t``'s variance, one first-order step from ``T - 1`` crosses that stretch with
  little error, and the other steps go where the estimate changes. Which clip works best was
  measured with ``scripts/solver_error.py`` (docs/experiments/sampler-lever.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

#: the grids :func:`make_grid` builds (the DPM-Solver++ solvers' ``timestep_spacing``)
SPACINGS: tuple[str, ...] = ("trailing", "logsnr")


def half_log_snr(alpha_bar: Tensor) -> Tensor:
    """``lambda = log(alpha / sigma) = 0.5 * log(alpha_bar / (1 - alpha_bar))`` for ``alpha_bar < 1``."""
    return 0.5 * (torch.log(alpha_bar) - torch.log1p(-alpha_bar))


def validate_spacing(
    spacing: Any, logsnr_range: Any, allowed: tuple[str, ...] = SPACINGS, owner: str = ""
) -> tuple[str, tuple[float, float] | None]:
    """``(timestep_spacing, logsnr_range)`` checked on their own (the schedule's bounds: :func:`logsnr_grid`).

    ``spacing`` must be one of ``allowed`` (``owner``, e.g. `` for kind='ddim'``, names whose list it is).
    ``logsnr_range`` is required for ``logsnr`` and must be ``null`` for any other grid, so a range
    that would be ignored is refused rather than silently unused.
    """
    if spacing not in allowed:
        raise ValueError(f"timestep_spacing={spacing!r} is not allowed{owner}; allowed: {', '.join(allowed)}")
    if spacing != "logsnr":
        if logsnr_range is not None:
            raise ValueError(
                f"logsnr_range={logsnr_range!r} is only used by timestep_spacing=logsnr; set it to null for {spacing}"
            )
        return spacing, None
    values = list(logsnr_range) if isinstance(logsnr_range, Sequence) and not isinstance(logsnr_range, str) else None
    if (
        values is None
        or len(values) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values)
        or not values[0] < values[1]
    ):
        raise ValueError(
            f"logsnr_range={logsnr_range!r} must be [lambda_noisy, lambda_clean], two finite numbers with "
            "lambda_noisy < lambda_clean (half log-SNR; e.g. [-3.5, 3.0])"
        )
    return spacing, (float(values[0]), float(values[1]))


def trailing_grid(num_train_timesteps: int, steps: int) -> list[int]:
    """``steps`` descending timesteps, evenly spaced in ``t``, starting at ``T - 1``."""
    T = num_train_timesteps
    return (torch.round(torch.arange(T, 0, -T / steps, dtype=torch.float64)) - 1).long()[:steps].tolist()


def logsnr_grid(alphas_cumprod: Tensor, steps: int, logsnr_range: tuple[float, float]) -> list[int]:
    """``T - 1``, then ``steps - 1`` timesteps nearest to ``lambda`` values evenly spaced over ``logsnr_range``.

    Raises:
        ValueError: the range is not strictly inside the schedule's ``(lambda(T - 1), lambda(0)]`` (the
            first point is ``T - 1`` itself, so the rest must be cleaner), or two points fall on the same
            training timestep (too many steps for the range).
    """
    lam = half_log_snr(alphas_cumprod.double())  # (T,) decreasing in t
    noisy, clean = logsnr_range
    lowest, highest = float(lam[-1]), float(lam[0])
    if not (lowest < noisy and clean <= highest):
        raise ValueError(
            f"logsnr_range={[noisy, clean]} must lie inside this noise schedule's half log-SNR range "
            f"({lowest:.2f}, {highest:.2f}] (timesteps {len(lam) - 1} .. 0)"
        )
    targets = torch.linspace(noisy, clean, steps - 1, dtype=torch.float64)  # (steps - 1,)
    nearest = (lam[None, :] - targets[:, None]).abs().argmin(dim=1)  # (steps - 1,) timestep per target
    grid = [len(lam) - 1] + nearest.tolist()
    if len(set(grid)) != len(grid):
        raise ValueError(
            f"steps={steps} do not fit in logsnr_range={[noisy, clean]} as distinct training timesteps "
            "(two grid points fall on the same timestep); use fewer steps or a wider range"
        )
    return grid


def make_grid(alphas_cumprod: Tensor, steps: int, spacing: str, logsnr_range: tuple[float, float] | None) -> list[int]:
    """The ``steps``-long descending grid of ``spacing`` (validated by :func:`validate_spacing`)."""
    if spacing == "logsnr" and logsnr_range is not None:
        return logsnr_grid(alphas_cumprod, steps, logsnr_range)
    if spacing == "trailing":
        return trailing_grid(len(alphas_cumprod), steps)
    raise ValueError(f"timestep_spacing={spacing!r} with logsnr_range={logsnr_range!r}: see validate_spacing")
