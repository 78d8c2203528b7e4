"""What every reverse-process solver shares: its settings, the inference grid, clipping, step noise.

A solver turns a trained model's output into one reverse step ``x_t -> x_{t_prev}`` along a grid
of timesteps. Its constructor takes its own settings only (``steps``, clipping, and e.g. DDIM's
``eta``), so a ``conf/sampler/*.yaml`` config is its constructor call and a key it does not take is an
error. The :class:`~tinyldm.diffusion.noise_schedule.NoiseSchedule` the model was trained with comes at
:meth:`Solver.set_timesteps`, which lays out the grid on it and starts a new trajectory: the
interface is diffusers' (``set_timesteps`` / ``timesteps`` / ``step``), so the solvers can be
compared against diffusers step by step.

One solver per file: :mod:`~tinyldm.diffusion.ddpm`, :mod:`~tinyldm.diffusion.ddim`,
:mod:`~tinyldm.diffusion.dpm_solver`, :mod:`~tinyldm.diffusion.dpm_solver_sde`. A solver is cheap and
keeps per-trajectory state (grid, multistep history), reset by every :meth:`~Solver.set_timesteps`.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

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


def validate_strength(strength: Any) -> float:
    """``strength`` as a float in ``[0, 1]`` (the share of the grid an edit runs); else ``ValueError`` naming it."""
    if not _is_number(strength) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be a number in [0, 1] (0: the source as it is, 1: afresh), got {strength!r}")
    return float(strength)


def validate_steps(steps: Any) -> int | None:
    """``steps`` as given: an integer >= 1, or ``None`` (every training timestep); else ``ValueError`` naming it."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1 or null (every training timestep), got {steps!r}")
    return steps


class Solver(ABC):
    """Base of the reverse-process solvers: settings, DDIM's "leading" grid, clipping; subclasses implement ``step``.

    Args:
        steps: inference steps (``None``: every one of the schedule's ``T`` training timesteps, the
            classic 1,000-step DDPM); at most ``T``, checked by :meth:`set_timesteps`.
        clip_sample: clamp the predicted ``x0`` to ``[-clip_sample_range, clip_sample_range]``
            in each step. Off by default because latents are not bounded like pixels.
        clip_sample_range: bound used when ``clip_sample`` is on.

    Every constructor argument of a solver is kept as the attribute of the same name (validated and
    normalised), which :attr:`config` reads back: the settings are the config.
    """

    #: the solver's name in results files and in ``conf/sampler/`` (the config file that builds it)
    name: ClassVar[str]

    def __init__(self, steps: int | None = None, clip_sample: bool = False, clip_sample_range: float = 1.0) -> None:
        self.steps = validate_steps(steps)
        self.clip_sample, self.clip_sample_range = validate_clip(clip_sample, clip_sample_range)
        self.schedule: NoiseSchedule | None = None
        self.num_inference_steps = 0
        self.timesteps: Tensor = torch.empty(0, dtype=torch.long)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this solver (tuples as lists, as a config holds them)."""
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return {n: list(v) if isinstance(v, tuple) else v for n in names for v in [getattr(self, n)]}

    def as_config(self) -> dict[str, Any]:
        """:attr:`config` with its ``_target_``: what checkpoints and results files record."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", **self.config}

    def replace(self, **changes: Any) -> Solver:
        """A new solver of this kind with ``changes`` to its settings, validated like any (``TypeError`` for a
        setting it does not take, naming the ones it does)."""
        unknown = sorted(set(changes) - set(self.config))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} ({self.name}) has no setting {', '.join(unknown)}; "
                f"its settings: {', '.join(self.config)}"
            )
        return type(self)(**{**self.config, **changes})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config.items())})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.config == self.config

    __hash__ = None  # mutable per-trajectory state: not a dict key

    @property
    def num_train_timesteps(self) -> int:
        return self._bound().num_train_timesteps

    def _bound(self) -> NoiseSchedule:
        if self.schedule is None:
            raise RuntimeError(f"{type(self).__name__}: call set_timesteps(schedule) before stepping")
        return self.schedule

    def check_schedule(self, schedule: NoiseSchedule) -> int:
        """The number of steps this solver takes on ``schedule``; call it to refuse a bad pair before any work.

        Raises:
            TypeError: ``schedule`` is not a :class:`NoiseSchedule`.
            ValueError: ``steps`` exceeds the schedule's ``num_train_timesteps`` (subclasses add their grid's checks).
        """
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(
                f"{type(self).__name__} runs on a NoiseSchedule, got {type(schedule).__name__}: {schedule!r}"
            )
        steps = schedule.num_train_timesteps if self.steps is None else self.steps
        if steps > schedule.num_train_timesteps:
            raise ValueError(
                f"steps={steps} exceeds the noise schedule's num_train_timesteps={schedule.num_train_timesteps}; "
                "a sampler cannot visit more timesteps than the model was trained on"
            )
        return steps

    def set_timesteps(
        self, schedule: NoiseSchedule, device: torch.device | str | None = None, strength: float = 1.0
    ) -> None:
        """Lay the descending timestep grid on ``schedule`` and start a new trajectory.

        ``strength`` < 1 starts part-way down it, as diffusers' image-to-image ``strength`` does: of the
        ``n`` grid steps only the last ``int(n * strength)`` run (none at 0), so an edit noises its source
        to the first of them (:meth:`start_timestep`) and denoises from there with the same grid.
        """
        steps = self.check_schedule(schedule)
        self.schedule, self.num_inference_steps = schedule, steps
        grid = self._grid(schedule, steps)  # the whole descending grid, T-1 (or so) .. 0
        self._start(grid)
        run = min(int(steps * validate_strength(strength)), steps)
        timesteps = torch.tensor(grid[steps - run :], dtype=torch.long)  # (run,) descending
        self.timesteps = timesteps.to(device) if device is not None else timesteps

    def snapshot(self) -> dict[str, Any]:
        """What the solver carries between steps, to :meth:`restore` when a step is run again (RePaint)."""
        return dict(vars(self))  # shallow: a step replaces its state, it never changes a tensor in place

    def restore(self, snapshot: dict[str, Any]) -> None:
        vars(self).update(snapshot)

    def start_timestep(self) -> int | None:
        """The timestep the trajectory starts at: where an edit's source is noised to (None: no step runs)."""
        return int(self.timesteps[0]) if len(self.timesteps) else None

    def _grid(self, schedule: NoiseSchedule, steps: int) -> list[int]:
        """The descending grid of ``steps`` timesteps: diffusers' default ``"leading"`` spacing,
        ``step_ratio = T // n`` and ``[(n-1) * step_ratio, ..., step_ratio, 0]`` (``n = T``: every timestep)."""
        step_ratio = schedule.num_train_timesteps // steps
        return [k * step_ratio for k in range(steps - 1, -1, -1)]

    def _start(self, grid: list[int]) -> None:  # noqa: B027 - a hook: most solvers carry nothing between steps
        """Reset what a solver carries from step to step, for a trajectory on ``grid`` (none here)."""

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
