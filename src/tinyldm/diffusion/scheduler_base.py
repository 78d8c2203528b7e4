"""Weight-free noise schedulers: the forward process for training and the reverse step for sampling.

A scheduler owns a beta schedule (see :mod:`tinyldm.diffusion.schedules`) and nothing
learned. It answers three questions:

* **training** - how to corrupt a clean sample ``x0`` to ``x_t``
  (:meth:`add_noise`) and what the network should predict there
  (:meth:`training_target`: the noise, the velocity, or ``x0`` itself);
* **inference grid** - which timesteps a sampler visits (:meth:`set_timesteps`,
  :attr:`timesteps`, descending);
* **reverse step** - how to go from ``x_t`` to ``x_{t_prev}`` given the network output
  (:meth:`step`).

Notation (``alpha_bar`` is the cumulative product of ``1 - beta``)::

    x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps          (forward process)
    v_t = sqrt(alpha_bar_t) * eps - sqrt(1 - alpha_bar_t) * x0          (velocity, Salimans & Ho 2022)

The two schedulers mirror diffusers' ``DDPMScheduler`` (variance ``fixed_small``) and
``DDIMScheduler`` (``timestep_spacing="leading"``, ``steps_offset=0``,
``set_alpha_to_one=True``) with ``clip_sample=False`` closely enough to agree to float32
round-off; ``tests/unit/test_schedulers.py`` checks this. Keeping that parity means a model
trained here can be sampled with diffusers and vice versa.

Schedulers hold plain tensors, not ``nn.Parameter``/buffers, so they never end up in a
``state_dict``: a checkpoint stores :attr:`~_NoiseScheduler.config` instead and rebuilds
the scheduler with :meth:`~_NoiseScheduler.from_config`.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from tinyldm.diffusion.schedules import BETA_SCHEDULES, make_betas

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


class SchedulerOutput(NamedTuple):
    """Result of one reverse step.

    Attributes:
        prev_sample: ``x_{t_prev}``, the input to the next step. ``(B, C, H, W)``.
        pred_original_sample: the scheduler's current estimate of ``x0``; useful for
            visualising a denoising trajectory. ``(B, C, H, W)``.
    """

    prev_sample: Tensor
    pred_original_sample: Tensor


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _randn(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped ``shape`` with ``like``'s dtype, on ``like``'s device.

    Noise is drawn on the *generator's* device and then moved, so a CPU generator gives
    the same numbers whether the sample lives on the CPU or a GPU (the same rule as
    diffusers' ``randn_tensor``), which keeps seeds reproducible across machines.
    """
    draw_device = generator.device if generator is not None else like.device
    noise = torch.randn(shape, generator=generator, device=draw_device, dtype=like.dtype)
    return noise.to(like.device)


def _expand_to(coeffs: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample coefficients ``(B,)`` to ``(B, 1, 1, ...)`` to broadcast against ``like``."""
    return coeffs.reshape(coeffs.shape[0], *([1] * (like.ndim - 1)))


class _NoiseScheduler(ABC):
    """Shared schedule, forward process, config handling and ``x0``/``eps`` algebra.

    Subclasses only implement :meth:`step`.

    Args:
        num_train_timesteps: number of training diffusion steps ``T``.
        beta_schedule: ``"linear"``, ``"scaled_linear"`` or ``"cosine"``.
        beta_start: first beta (ignored by ``cosine``).
        beta_end: last beta (ignored by ``cosine``).
        prediction_type: what the network predicts: ``"epsilon"`` (the noise),
            ``"v_prediction"`` (the velocity) or ``"sample"`` (``x0``).
        clip_sample: clamp the predicted ``x0`` to ``[-clip_sample_range, clip_sample_range]``
            in each step. Off by default because latents are not bounded like pixels.
        clip_sample_range: bound used when ``clip_sample`` is on.
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
    ) -> None:
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be an integer >= 1, got {num_train_timesteps!r}")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}; got {beta_schedule!r}")
        for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
            if not _is_number(value) or not (0.0 < value < 1.0):
                raise ValueError(f"{name} must be a number in the open interval (0, 1), got {value!r}")
        if beta_start > beta_end:
            raise ValueError(f"beta_start must be <= beta_end, got beta_start={beta_start!r} > beta_end={beta_end!r}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}; got {prediction_type!r}")
        if not isinstance(clip_sample, bool):
            raise ValueError(f"clip_sample must be a bool (true/false), got {clip_sample!r}")
        if not _is_number(clip_sample_range) or not (0.0 < clip_sample_range < math.inf):
            raise ValueError(f"clip_sample_range must be a finite number > 0, got {clip_sample_range!r}")

        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.clip_sample_range = float(clip_sample_range)

        # All float32 and computed in the same order as diffusers, for exact parity.
        self.betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)  # (T,)
        self.alphas = 1.0 - self.betas  # (T,)
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # (T,) alpha_bar_t, decreasing in (0, 1]
        # alpha_bar "before step 0": the last reverse step lands on the clean sample
        # (diffusers' set_alpha_to_one=True / DDPM's ``one``).
        self.final_alpha_cumprod = torch.tensor(1.0)

        self.num_inference_steps: int = num_train_timesteps
        self.timesteps: Tensor = torch.empty(0, dtype=torch.long)
        self.set_timesteps(num_train_timesteps)

    # ------------------------------------------------------------------ config

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments as a plain dict, so a checkpoint can store and rebuild the scheduler."""
        return {name: getattr(self, name) for name in self._config_names()}

    @classmethod
    def _config_names(cls) -> list[str]:
        params = inspect.signature(cls.__init__).parameters
        return [name for name in params if name != "self"]

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any):
        """Build a scheduler from a :attr:`config` dict (or a Hydra/OmegaConf node).

        Keys starting with ``_`` (such as Hydra's ``_target_``) are ignored, and so are
        keys that belong to a *sibling* scheduler (``eta`` when building a DDPM
        scheduler), so that the scheduler config stored at training time can build
        any sampler. Any other unknown key is an error, because a silently dropped
        setting would change the noise schedule without telling anyone.

        Args:
            config: mapping of constructor arguments.
            **overrides: values that replace entries of ``config``.
        """
        merged = {str(k): v for k, v in dict(config).items() if not str(k).startswith("_")}
        merged.update(overrides)
        accepted = set(cls._config_names())
        # keys of any sibling scheduler are tolerated (a DDIM config may carry eta when building DDPM)
        known = set().union(*(klass._config_names() for klass in _NoiseScheduler.__subclasses__())) | accepted
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"Unknown scheduler config key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**{k: v for k, v in merged.items() if k in accepted})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"

    def __len__(self) -> int:
        return self.num_train_timesteps

    # --------------------------------------------------------- forward process

    def _alpha_bar_at(self, timesteps: Tensor, like: Tensor) -> Tensor:
        """``alpha_bar[timesteps]`` as ``(B, 1, ..., 1)`` in ``like``'s device and dtype."""
        if self.alphas_cumprod.device != like.device:
            # Keep the schedule where the data is, so repeated training calls do not copy it.
            self.alphas_cumprod = self.alphas_cumprod.to(like.device)
        alpha_bar = self.alphas_cumprod.to(like.dtype)[timesteps.to(like.device).reshape(-1)]  # (B,)
        return _expand_to(alpha_bar, like)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """Sample ``x_t ~ q(x_t | x0)``: ``sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * noise``.

        Args:
            original_samples: clean ``x0``, ``(B, C, H, W)``.
            noise: standard normal, same shape.
            timesteps: ``(B,)`` long in ``[0, T)``, one per sample.
        """
        alpha_bar = self._alpha_bar_at(timesteps, original_samples)  # (B, 1, 1, 1)
        return alpha_bar**0.5 * original_samples + (1 - alpha_bar) ** 0.5 * noise  # (B, C, H, W)

    def get_velocity(self, sample: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """The v-prediction target ``sqrt(alpha_bar_t) * noise - sqrt(1 - alpha_bar_t) * x0``.

        ``sample`` is the *clean* ``x0`` (diffusers' naming), ``(B, C, H, W)``.
        """
        alpha_bar = self._alpha_bar_at(timesteps, sample)  # (B, 1, 1, 1)
        return alpha_bar**0.5 * noise - (1 - alpha_bar) ** 0.5 * sample  # (B, C, H, W)

    def training_target(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """What the network should output at ``x_t = add_noise(x0, noise, timesteps)``.

        The noise for ``epsilon``, the velocity for ``v_prediction``, ``x0`` for ``sample``.
        Keeping this next to :meth:`step` guarantees training and sampling agree on the
        parameterisation.
        """
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.get_velocity(x0, noise, timesteps)
        return x0

    # ---------------------------------------------------------- inference grid

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

    # -------------------------------------------------------- reverse-step math

    def _check_timestep(self, timestep: int | Tensor) -> int:
        t = int(timestep)
        if not (0 <= t < self.num_train_timesteps):
            raise ValueError(f"timestep must be in [0, {self.num_train_timesteps}), got {t}")
        return t

    def _alpha_bars(self, t: int, prev_t: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """0-dim float32 ``alpha_bar_t`` and ``alpha_bar_prev`` on ``device``.

        Coefficients stay in the schedule's float32 (as in diffusers); only the final
        products with the sample take its dtype, so fp16 samples do not lose precision
        in ``sqrt(alpha_bar)``.
        """
        alpha_bar_t = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        return alpha_bar_t.to(device), alpha_bar_prev.to(device)

    def _pred_x0(self, model_output: Tensor, sample: Tensor, alpha_bar_t: Tensor) -> Tensor:
        """Convert the network output at ``x_t`` into an estimate of ``x0``."""
        beta_bar_t = 1 - alpha_bar_t
        if self.prediction_type == "epsilon":
            return (sample - beta_bar_t**0.5 * model_output) / alpha_bar_t**0.5
        if self.prediction_type == "v_prediction":
            return alpha_bar_t**0.5 * sample - beta_bar_t**0.5 * model_output
        return model_output

    def _pred_eps(self, model_output: Tensor, sample: Tensor, alpha_bar_t: Tensor, pred_x0: Tensor) -> Tensor:
        """Convert the network output at ``x_t`` into an estimate of the noise."""
        beta_bar_t = 1 - alpha_bar_t
        if self.prediction_type == "epsilon":
            return model_output
        if self.prediction_type == "v_prediction":
            return alpha_bar_t**0.5 * model_output + beta_bar_t**0.5 * sample
        return (sample - alpha_bar_t**0.5 * pred_x0) / beta_bar_t**0.5

    def _maybe_clip(self, pred_x0: Tensor) -> Tensor:
        if self.clip_sample:
            return pred_x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return pred_x0

    @abstractmethod
    def step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor, generator=None, **kwargs) -> SchedulerOutput:
        """One reverse step ``x_t -> x_{t_prev}`` (each scheduler defines its own update)."""
