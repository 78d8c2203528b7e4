"""The stage-2 training loss: what a batch is noised to, what the denoiser must predict, how steps are weighted.

One object (``diffusion.loss``, its config its constructor) holds the recipe, so a new option touches this
class and its config only. Training calls it with ``weighted=True``; validation with ``weighted=False``,
so ``ldm/val/loss`` stays the plain MSE at uniform timesteps, comparable between runs whatever the
recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tinyldm.diffusion.loss_weighting import min_snr_weights, validate_min_snr_gamma
from tinyldm.diffusion.noise_schedule import NoiseSchedule
from tinyldm.diffusion.timestep_sampling import TimestepSampling


@dataclasses.dataclass(frozen=True)
class DiffusionLoss:
    """MSE between the denoiser's output and the noise schedule's target at random timesteps.

    Args:
        min_snr_gamma: min-SNR-gamma loss weighting (Hang et al. 2023,
            :mod:`~tinyldm.diffusion.loss_weighting`); ``None`` is plain MSE.
        timestep_sampling: which timesteps training draws: ``distribution`` (``uniform`` or ``logit_normal``,
            with ``loc`` and ``scale``; :class:`~tinyldm.diffusion.timestep_sampling.TimestepSampling`).
    """

    min_snr_gamma: float | None = None
    timestep_sampling: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_snr_gamma", validate_min_snr_gamma(self.min_snr_gamma))
        sampling = TimestepSampling.from_config(self.timestep_sampling)
        object.__setattr__(self, "timestep_sampling", dataclasses.asdict(sampling))
        object.__setattr__(self, "_timesteps", sampling)

    def __call__(
        self,
        denoiser: torch.nn.Module,
        schedule: NoiseSchedule,
        latents: Tensor,
        labels: Any,
        generator: torch.Generator | None = None,
        drop_labels: bool | None = None,
        weighted: bool = True,
    ) -> Tensor:
        """The loss of ``denoiser`` on ``latents`` ``(B, C, h, w)`` under ``labels`` (class indices or prompts).

        ``denoiser`` is a :class:`~tinyldm.denoiser.ConditionalDenoiser`: it turns ``labels`` into its
        context (dropping them at random for classifier-free guidance unless ``drop_labels=False``). Noise,
        timesteps and label dropping all come from ``generator``.
        """
        batch, device = latents.shape[0], latents.device
        gen_device = generator.device if generator is not None else device
        sampling = self._timesteps if weighted else TimestepSampling()
        timesteps = sampling.sample(batch, schedule.num_train_timesteps, generator, gen_device).to(device)  # (B,)
        noise = torch.randn(latents.shape, generator=generator, device=gen_device).to(device)  # (B, C, h, w)
        noisy = schedule.add_noise(latents, noise, timesteps)  # (B, C, h, w)
        context, mask = denoiser.context(labels, batch, drop_labels=drop_labels, generator=generator)  # (B, K, D)
        prediction = denoiser(noisy, timesteps, context, mask)  # (B, C, h, w)
        target = schedule.training_target(latents, noise, timesteps)  # (B, C, h, w)
        if not (weighted and self.min_snr_gamma):
            return F.mse_loss(prediction.float(), target.float())
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)  # (B,)
        weights = min_snr_weights(schedule.alphas_cumprod, timesteps, schedule.prediction_type, self.min_snr_gamma)
        return (weights * per_sample).mean()  # weights: (B,)
