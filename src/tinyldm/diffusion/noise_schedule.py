"""The training noise schedule: how the forward process corrupts data, and what the network predicts.

A schedule is the list ``beta_1 .. beta_T`` of per-step noise variances plus the network's
parameterisation (``prediction_type``). Everything else is derived from it: ``alpha_t = 1 - beta_t``
and the cumulative product ``alpha_bar_t``, i.e. how much of the clean signal survives after ``t``
steps::

    x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps          (forward process)
    v_t = sqrt(alpha_bar_t) * eps - sqrt(1 - alpha_bar_t) * x0          (velocity, Salimans & Ho 2022)

This is a property of the *trained model*, fixed when training starts and stored with the
checkpoint: sampling with another schedule than the one the model was trained on is a silent,
common bug. The reverse-process solvers (:mod:`~tinyldm.diffusion.ddpm`,
:mod:`~tinyldm.diffusion.ddim`, :mod:`~tinyldm.diffusion.dpm_solver`) are built *on* a
``NoiseSchedule`` and share its ``x0`` / ``eps`` conversions, so training and every sampler agree
on the parameterisation by construction.

Three beta schedules are offered:

* ``linear`` - DDPM (Ho et al., 2020, https://arxiv.org/abs/2006.11239): betas evenly spaced from
  ``beta_start`` to ``beta_end``.
* ``scaled_linear`` - Latent / Stable Diffusion (Rombach et al., 2022,
  https://arxiv.org/abs/2112.10752): evenly spaced in ``sqrt(beta)``, then squared. Small betas
  early and a gentler end, which suits latents whose scale is ~1 and that carry less redundancy
  than pixels.
* ``cosine`` - Nichol & Dhariwal (2021, https://arxiv.org/abs/2102.09672): chosen so that
  ``alpha_bar`` follows ``cos^2`` and destroys information more evenly over time; ``beta_start``
  and ``beta_end`` are ignored and each beta is capped at ``0.999`` so the last steps do not blow
  up. Identical to diffusers' ``squaredcos_cap_v2``.

Betas are float32 and computed in the same order as the reference implementations (CompVis LDM,
diffusers): matching them bit-for-bit keeps a model trained here numerically interchangeable with
theirs (``tests/unit/test_schedulers.py`` checks it).

The schedule holds plain tensors, not ``nn.Parameter``/buffers, so it never ends up in a
``state_dict``: a checkpoint stores :attr:`NoiseSchedule.config` (its hyper-parameters) instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

BETA_SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")

# Cosine schedule constants from Nichol & Dhariwal (2021), Eq. 17: the small offset
# ``s`` keeps beta_1 from being vanishingly small, and the cap avoids a singular
# final step where alpha_bar reaches 0.
_COSINE_OFFSET = 0.008
_COSINE_MAX_BETA = 0.999


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_num_train_timesteps(num_train_timesteps: Any) -> None:
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be an integer >= 1, got {num_train_timesteps!r}")


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
    _check_num_train_timesteps(num_train_timesteps)

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


def _expand_to(coeffs: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample coefficients ``(B,)`` to ``(B, 1, 1, ...)`` to broadcast against ``like``."""
    return coeffs.reshape(coeffs.shape[0], *([1] * (like.ndim - 1)))


class NoiseSchedule:
    """The forward process a model is trained with, and the ``x0`` / ``eps`` algebra its solvers share.

    It takes exactly its own arguments; inference-time choices (solver, steps, ``eta``, clipping,
    guidance) belong to the solvers and the guidance (:mod:`~tinyldm.diffusion.sampling`).

    Args:
        num_train_timesteps: number of training diffusion steps ``T``.
        beta_schedule: ``"linear"``, ``"scaled_linear"`` or ``"cosine"``.
        beta_start: first beta (ignored by ``cosine``).
        beta_end: last beta (ignored by ``cosine``).
        prediction_type: what the network predicts: ``"epsilon"`` (the noise),
            ``"v_prediction"`` (the velocity) or ``"sample"`` (``x0``).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "epsilon",
    ) -> None:
        _check_num_train_timesteps(num_train_timesteps)
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}; got {beta_schedule!r}")
        for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
            if not _is_number(value) or not (0.0 < value < 1.0):
                raise ValueError(f"{name} must be a number in the open interval (0, 1), got {value!r}")
        if beta_start > beta_end:
            raise ValueError(f"beta_start must be <= beta_end, got beta_start={beta_start!r} > beta_end={beta_end!r}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}; got {prediction_type!r}")

        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.prediction_type = prediction_type

        # All float32 and computed in the same order as diffusers, for exact parity.
        self.betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)  # (T,)
        self.alphas = 1.0 - self.betas  # (T,)
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # (T,) alpha_bar_t, decreasing in (0, 1]
        # alpha_bar "before step 0": the last reverse step lands on the clean sample
        # (diffusers' set_alpha_to_one=True / DDPM's ``one``).
        self.final_alpha_cumprod = torch.tensor(1.0)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments as a plain dict (what a checkpoint stores to rebuild the schedule)."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": self.prediction_type,
        }

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
        Keeping this next to :meth:`predict_x0` guarantees training and sampling agree on the
        parameterisation.
        """
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.get_velocity(x0, noise, timesteps)
        return x0

    # ------------------------------------------------- what the solvers share

    def check_timestep(self, timestep: int | Tensor) -> int:
        """``timestep`` as an int, or ``ValueError`` if it is outside ``[0, T)``."""
        t = int(timestep)
        if not (0 <= t < self.num_train_timesteps):
            raise ValueError(f"timestep must be in [0, {self.num_train_timesteps}), got {t}")
        return t

    def alpha_bars(self, t: int, prev_t: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """0-dim float32 ``alpha_bar_t`` and ``alpha_bar_prev`` on ``device`` (``prev_t < 0``: the clean end, 1).

        Coefficients stay in the schedule's float32 (as in diffusers); only the final
        products with the sample take its dtype, so fp16 samples do not lose precision
        in ``sqrt(alpha_bar)``.
        """
        alpha_bar_t = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        return alpha_bar_t.to(device), alpha_bar_prev.to(device)

    def predict_x0(self, model_output: Tensor, sample: Tensor, alpha_bar_t: Tensor) -> Tensor:
        """Convert the network output at ``x_t`` (``sample``, ``(B, C, H, W)``) into an estimate of ``x0``."""
        beta_bar_t = 1 - alpha_bar_t
        if self.prediction_type == "epsilon":
            return (sample - beta_bar_t**0.5 * model_output) / alpha_bar_t**0.5
        if self.prediction_type == "v_prediction":
            return alpha_bar_t**0.5 * sample - beta_bar_t**0.5 * model_output
        return model_output

    def output_from_x0(self, pred_x0: Tensor, sample: Tensor, alpha_bar_t: Tensor) -> Tensor:
        """The network output at ``x_t`` (``sample``) whose :meth:`predict_x0` is ``pred_x0``, all ``(B, C, H, W)``.

        For guidance rules that combine denoised estimates (APG) and hand the result to a solver,
        which reads network outputs. Needs ``alpha_bar_t < 1`` (every training timestep has it).
        """
        beta_bar_t = 1 - alpha_bar_t
        if self.prediction_type == "epsilon":
            return (sample - alpha_bar_t**0.5 * pred_x0) / beta_bar_t**0.5
        if self.prediction_type == "v_prediction":
            return (alpha_bar_t**0.5 * sample - pred_x0) / beta_bar_t**0.5
        return pred_x0

    def predict_eps(self, model_output: Tensor, sample: Tensor, alpha_bar_t: Tensor, pred_x0: Tensor) -> Tensor:
        """Convert the network output at ``x_t`` into an estimate of the noise (``pred_x0``: :meth:`predict_x0`'s)."""
        beta_bar_t = 1 - alpha_bar_t
        if self.prediction_type == "epsilon":
            return model_output
        if self.prediction_type == "v_prediction":
            return alpha_bar_t**0.5 * model_output + beta_bar_t**0.5 * sample
        return (sample - alpha_bar_t**0.5 * pred_x0) / beta_bar_t**0.5


# ------------------------------------------------------------------ checkpoints of tinyldm <= 0.1

#: ``_target_`` class names that a stored ``scheduler`` config carried before the noise schedule and the
#: solvers were split: the whole config then described a solver (forward process + sampling options).
LEGACY_SCHEDULER_CLASSES: tuple[str, ...] = ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler")
_LEGACY_SAMPLER_KEYS = ("clip_sample", "clip_sample_range")
_LEGACY_IGNORED_KEYS = ("eta",)  # a DDIMScheduler config's eta: the sampler's eta always replaced it


def from_legacy_config(scheduler: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a stored ``scheduler`` config into (noise-schedule config, sampler settings it carried).

    Checkpoints written by tinyldm <= 0.1 store ``scheduler`` as a *solver* config, e.g.
    ``{_target_: tinyldm.diffusion.DDPMScheduler, num_train_timesteps: 1000, beta_schedule: linear,
    beta_start: 0.0001, beta_end: 0.02, prediction_type: epsilon, clip_sample: false,
    clip_sample_range: 1.0}``. This is the one place that reads that format:

    * the five schedule keys become a :class:`NoiseSchedule` config (``_target_`` rewritten);
    * ``clip_sample: true`` (with its ``clip_sample_range``) is returned as sampler settings, because
      clipping is an inference-time choice of the solver now; ``clip_sample: false`` is the solvers'
      default and carries nothing;
    * a DDIM config's ``eta`` is dropped: sampling always used the sampler's ``eta`` instead.

    The old ``_target_`` (``tinyldm.diffusion.DDPMScheduler`` ...) still names a class in tinyldm, so
    :func:`tinyldm.utils.instantiate.check_file_targets` accepts the file before it gets here.
    A config in the current format (any other ``_target_``) is returned unchanged, with no settings.

    Raises:
        ValueError: a legacy config with a key neither format knows (named in the message).
    """
    config = dict(scheduler)
    target = str(config.get("_target_", ""))
    if not (target.startswith("tinyldm.diffusion.") and target.rsplit(".", 1)[-1] in LEGACY_SCHEDULER_CLASSES):
        return config, {}
    schedule_keys = tuple(NoiseSchedule().config)
    known = {"_target_", *schedule_keys, *_LEGACY_SAMPLER_KEYS, *_LEGACY_IGNORED_KEYS}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"legacy scheduler config ({target}) has unknown key(s) {unknown}; allowed: {sorted(known)}")
    schedule = {"_target_": "tinyldm.diffusion.NoiseSchedule"}
    schedule.update({key: config[key] for key in schedule_keys if key in config})
    carried = {}
    if config.get("clip_sample", False) is not False:
        carried = {key: config[key] for key in _LEGACY_SAMPLER_KEYS if key in config}
    return schedule, carried
