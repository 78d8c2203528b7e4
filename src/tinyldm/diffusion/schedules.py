"""Noise (beta) schedules for the forward diffusion process.

A schedule is the list ``beta_1 .. beta_T`` of per-step noise variances. Everything
else a scheduler needs (``alpha_t = 1 - beta_t`` and the cumulative product
``alpha_bar_t``, i.e. how much of the clean signal survives after ``t`` steps)
is derived from it.

Three schedules are offered:

* ``linear`` - DDPM (Ho et al., 2020): betas evenly spaced from ``beta_start`` to
  ``beta_end``.
* ``scaled_linear`` - Latent / Stable Diffusion: evenly spaced in ``sqrt(beta)``,
  then squared. Small betas early and a gentler end, which suits latents whose
  scale is ~1 and that carry less redundancy than pixels.
* ``cosine`` - Nichol & Dhariwal (2021): chosen so that ``alpha_bar`` follows
  ``cos^2`` and destroys information more evenly over time; ``beta_start`` and
  ``beta_end`` are ignored and each beta is capped at ``0.999`` so the last steps
  do not blow up. Identical to diffusers' ``squaredcos_cap_v2``.

The default output dtype is float32 because that is what the reference
implementations (CompVis LDM, diffusers) use; matching them bit-for-bit keeps our
schedulers numerically interchangeable with theirs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BETA_SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear", "cosine")

# Cosine schedule constants from Nichol & Dhariwal (2021), Eq. 17: the small offset
# ``s`` keeps beta_1 from being vanishingly small, and the cap avoids a singular
# final step where alpha_bar reaches 0.
_COSINE_OFFSET = 0.008
_COSINE_MAX_BETA = 0.999


def _cosine_alpha_bar(fraction: float) -> float:
    """``alpha_bar`` at continuous time ``fraction`` in ``[0, 1]`` (before normalisation)."""
    return math.cos((fraction + _COSINE_OFFSET) / (1.0 + _COSINE_OFFSET) * math.pi / 2) ** 2


def make_betas(
    schedule: str,
    num_train_timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Return the ``(num_train_timesteps,)`` tensor of betas for a named schedule.

    Args:
        schedule: one of ``"linear"``, ``"scaled_linear"``, ``"cosine"``.
        num_train_timesteps: number of diffusion steps ``T`` (>= 1).
        beta_start: first beta (``linear`` / ``scaled_linear`` only).
        beta_end: last beta (``linear`` / ``scaled_linear`` only).
        dtype: output dtype. The default float32 matches diffusers exactly.

    Raises:
        ValueError: unknown ``schedule`` or ``num_train_timesteps < 1``.
    """
    if schedule not in BETA_SCHEDULES:
        raise ValueError(f"Unknown beta schedule {schedule!r}; allowed: {', '.join(BETA_SCHEDULES)}")
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be an integer >= 1, got {num_train_timesteps!r}")

    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=dtype)  # (T,)
    if schedule == "scaled_linear":
        sqrt_betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=dtype)  # (T,)
        return sqrt_betas**2

    # cosine: beta_t = 1 - alpha_bar(t / T) / alpha_bar((t - 1) / T), computed in
    # double precision (python floats) and only then rounded to ``dtype``.
    betas = []
    for i in range(num_train_timesteps):
        start = _cosine_alpha_bar(i / num_train_timesteps)
        end = _cosine_alpha_bar((i + 1) / num_train_timesteps)
        betas.append(min(1.0 - end / start, _COSINE_MAX_BETA))
    return torch.tensor(betas, dtype=dtype)  # (T,)
