"""The weight averages stage 2 keeps: the EMA profiles, and when the autoguidance guide is taken.

Short runs (520 steps) never reach a fixed EMA decay, so the profile decides what the sampling
weights average over; the guide is a frozen copy of that average at a fraction of the run.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def ema_with_warmup(decay: float):
    """``multi_avg_fn`` for :class:`AveragedModel`: EMA whose decay ramps up as min(decay, (1+n)/(10+n)).

    A plain EMA started at step 0 keeps ``decay**steps`` of the *initial* weights: with 0.998 that is
    still 24% after 700 steps, enough to turn short runs' samples into noise. The warm-up (as in
    diffusers' EMAModel) lets the average follow the fast early changes and settle to ``decay``.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, weight)

    return update


def validate_ema(decay: Any, power: Any) -> None:
    """Refuse an EMA setting no average can follow, naming it and what is allowed."""

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not number(decay) or not 0.0 <= decay < 1.0:
        raise ValueError(f"diffusion.ema_decay={decay!r} must be a number in [0, 1)")
    if power is not None and (not number(power) or not 0 < power < math.inf):
        raise ValueError(f"diffusion.ema_power={power!r} must be null (warm-up EMA) or a number > 0")


def validate_guide_at(fraction: Any) -> float | None:
    """None, or the fraction of stage 2's optimizer steps in (0, 1) after which the guide is taken; else raise."""
    if fraction is None:
        return None
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ValueError(
            f"diffusion.guide_at={fraction!r} must be null (no autoguidance guide) or a number in (0, 1), "
            "the fraction of stage 2's optimizer steps after which the EMA weights become the guide (e.g. 0.25)"
        )
    return float(fraction)


def power_function_ema(gamma: float):
    """``multi_avg_fn`` for :class:`AveragedModel`: the power-function EMA of Karras et al. 2024 (EDM2,
    "Analyzing and Improving the Training Dynamics of Diffusion Models", https://arxiv.org/abs/2312.02696, eq. 3).

    After ``t`` updates the average weighs update ``k`` in proportion to ``k ** gamma``: the decay
    ``(1 - 1/t) ** (gamma + 1)`` grows with the run, so the average always spans the same *fraction* of
    training whatever its length (relative width ``sqrt((g + 1) / ((g + 2) ** 2 * (g + 3)))``: 0.14 at
    ``gamma = 4``, 0.09 at 8, 0.05 at 17). Short runs never reach a fixed decay such as 0.995, so its
    length is what matters. The warm-up EMA above, ``(1 + n) / (10 + n)`` for most of a 520-step run, is
    close to ``gamma = 8``.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)  # updates already averaged (>= 1: AveragedModel copies the first one)
        weight = 1.0 - (n / (n + 1.0)) ** (gamma + 1.0)
        torch._foreach_lerp_(averaged, current, weight)

    return update
