"""What every reverse-process solver shares: the step output, the inference grid, clipping, step noise.

A solver turns a trained model's output into one reverse step ``x_t -> x_{t_prev}`` along a grid
of timesteps. It is built *on* a :class:`~tinyldm.diffusion.noise_schedule.NoiseSchedule` (the
forward process the model was trained with) and adds only inference-time state: the grid
(:meth:`Solver.set_timesteps`, :attr:`Solver.timesteps`, descending), ``x0`` clipping, and whatever
a solver remembers between steps. The interface is diffusers' (``set_timesteps`` / ``timesteps``
/ ``step``), so the solvers can be compared against diffusers step by step.

One solver per file: :mod:`~tinyldm.diffusion.ddpm`, :mod:`~tinyldm.diffusion.ddim`,
:mod:`~tinyldm.diffusion.dpm_solver`. Solvers are cheap and stateful (grid, multistep history):
build a fresh one per sampling run (:meth:`~tinyldm.diffusion.sampling.DiffusionSampler.build_solver`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from tinyldm.diffusion.noise_schedule import NoiseSchedule, _is_number


class SchedulerOutput(NamedTuple):
    """Result of one reverse step.

    Attributes:
        prev_sample: ``x_{t_prev}``, the input to the next step. ``(B, C, H, W)``.
        pred_original_sample: the solver's current estimate of ``x0``; useful for
            visualising a denoising trajectory. ``(B, C, H, W)``.
    """

    prev_sample: Tensor
    pred_original_sample: Tensor


def validate_clip(clip_sample: Any, clip_sample_range: Any) -> tuple[bool, float]:
    """``(clip_sample, clip_sample_range)`` checked: a bool and a finite number > 0; else ``ValueError`` naming it."""
    if not isinstance(clip_sample, bool):
        raise ValueError(f"clip_sample must be a bool (true/false), got {clip_sample!r}")
    if not _is_number(clip_sample_range) or not (0.0 < clip_sample_range < math.inf):
        raise ValueError(f"clip_sample_range must be a finite number > 0, got {clip_sample_range!r}")
    return clip_sample, float(clip_sample_range)


def validate_interval(name: str, interval: Any, example: str) -> tuple[int, int] | None:
    """None, or ``[t_low, t_high]`` integer training timesteps with ``0 <= t_low <= t_high``; else ``ValueError``.

    The shape of every "only at these timesteps" option (``guidance_interval``, ``noise_interval``); the error
    names the option, what it got and an ``example``.
    """
    if interval is None:
        return None
    values = list(interval) if isinstance(interval, Sequence) and not isinstance(interval, str) else None
    if (
        values is None
        or len(values) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in values)
        or not 0 <= values[0] <= values[1]
    ):
        raise ValueError(
            f"{name}={interval!r} must be null or [t_low, t_high], integer timesteps with "
            f"0 <= t_low <= t_high (e.g. {example})"
        )
    return values[0], values[1]


def randn_from(generator: torch.Generator | None, shape: torch.Size, like: Tensor) -> Tensor:
    """Standard normal noise shaped ``shape`` with ``like``'s dtype, on ``like``'s device.

    Noise is drawn on the *generator's* device and then moved, so a CPU generator gives
    the same numbers whether the sample lives on the CPU or a GPU (the same rule as
    diffusers' ``randn_tensor``), which keeps seeds reproducible across machines.
    """
    draw_device = generator.device if generator is not None else like.device
    noise = torch.randn(shape, generator=generator, device=draw_device, dtype=like.dtype)
    return noise.to(like.device)


class Solver(ABC):
    """Base of the reverse-process solvers: DDIM's "leading" grid, clipping; subclasses implement :meth:`step`.

    Args:
        schedule: the training noise schedule (stored with the checkpoint).
        clip_sample: clamp the predicted ``x0`` to ``[-clip_sample_range, clip_sample_range]``
            in each step. Off by default because latents are not bounded like pixels.
        clip_sample_range: bound used when ``clip_sample`` is on.
    """

    def __init__(self, schedule: NoiseSchedule, clip_sample: bool = False, clip_sample_range: float = 1.0) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(
                f"{type(self).__name__} is built on a NoiseSchedule, got {type(schedule).__name__}: {schedule!r}"
            )
        self.schedule = schedule
        self.clip_sample, self.clip_sample_range = validate_clip(clip_sample, clip_sample_range)
        self.num_inference_steps: int = schedule.num_train_timesteps
        self.timesteps: Tensor = torch.empty(0, dtype=torch.long)
        self.set_timesteps(schedule.num_train_timesteps)

    @property
    def num_train_timesteps(self) -> int:
        return self.schedule.num_train_timesteps

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.schedule!r}, clip_sample={self.clip_sample!r}, "
            f"clip_sample_range={self.clip_sample_range!r})"
        )

    def set_timesteps(self, num_inference_steps: int | None = None, device: torch.device | str | None = None) -> None:
        """Choose the descending timestep grid the sampler visits.

        Uses diffusers' default ``"leading"`` spacing: ``step_ratio = T // n`` and the grid
        ``[(n-1) * step_ratio, ..., step_ratio, 0]``. ``n = T`` (the default,
        ``None``) gives every timestep ``T-1 .. 0``.

        Raises:
            ValueError: ``num_inference_steps`` not an integer in ``[1, T]``.
        """
        if num_inference_steps is None:
            num_inference_steps = self.num_train_timesteps
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, int)
            or not (1 <= num_inference_steps <= self.num_train_timesteps)
        ):
            raise ValueError(
                f"num_inference_steps must be an integer in [1, num_train_timesteps={self.num_train_timesteps}], "
                f"got {num_inference_steps!r}"
            )
        self.num_inference_steps = num_inference_steps
        step_ratio = self.num_train_timesteps // num_inference_steps
        timesteps = torch.arange(num_inference_steps - 1, -1, -1, dtype=torch.long) * step_ratio  # (n,) descending
        self.timesteps = timesteps.to(device) if device is not None else timesteps

    def previous_timestep(self, timestep: int) -> int:
        """The grid point after ``timestep`` (``-1`` past the last one, meaning "clean")."""
        return timestep - self.num_train_timesteps // self.num_inference_steps

    def _maybe_clip(self, pred_x0: Tensor) -> Tensor:
        if self.clip_sample:
            return pred_x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return pred_x0

    @abstractmethod
    def step(
        self, model_output: Tensor, timestep: int | Tensor, sample: Tensor, generator: torch.Generator | None = None
    ) -> SchedulerOutput:
        """One reverse step ``x_t -> x_{t_prev}`` (each solver defines its own update)."""
