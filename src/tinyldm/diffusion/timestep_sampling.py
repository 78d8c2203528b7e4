"""Which timesteps a training batch is noised to.

DDPM draws ``t`` uniformly from ``[0, T)``. Esser et al. 2024 ("Scaling Rectified Flow Transformers
for High-Resolution Image Synthesis", https://arxiv.org/abs/2403.03206, section 3.1) draw it from a
logit-normal instead, ``t / T = sigmoid(n)`` with ``n ~ N(loc, scale**2)``: with ``loc = 0`` the
training compute goes to the middle of the noise range (SNR near 1 under the cosine schedule), where
predicting the target is hardest, and less to the nearly clean and nearly pure-noise ends, where it
is easy; ``loc > 0`` moves it towards the noisy steps. The sampling density multiplies any per-step
loss weight (min-SNR), so the two together set how much each noise level counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

DISTRIBUTIONS = ("uniform", "logit_normal")


@dataclass(frozen=True)
class TimestepSampling:
    """How training timesteps are drawn (``diffusion.loss.timestep_sampling``); refuses bad values on creation."""

    distribution: str = "uniform"
    loc: float = 0.0  # logit_normal: mean of n (0 = the middle of the noise range, > 0 = noisier)
    scale: float = 1.0  # logit_normal: standard deviation of n (larger = more draws near both ends)

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            allowed = ", ".join(DISTRIBUTIONS)
            raise ValueError(f"diffusion.loss.timestep_sampling.distribution={self.distribution!r}; allowed: {allowed}")
        for name, low in (("loc", -math.inf), ("scale", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < math.inf:
                allowed = "a finite number" if name == "loc" else "a finite number > 0"
                raise ValueError(f"diffusion.loss.timestep_sampling.{name}={value!r} must be {allowed}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> TimestepSampling:
        """``None`` (checkpoints from before this option) is uniform; unknown keys are refused by name."""
        config = dict(config or {})
        unknown = sorted(set(config) - {"distribution", "loc", "scale"})
        if unknown:
            raise ValueError(
                f"diffusion.loss.timestep_sampling has unknown key(s) {unknown}; allowed: distribution, loc, scale"
            )
        return cls(**config)

    def sample(
        self, batch: int, num_train_timesteps: int, generator: torch.Generator | None, device: torch.device | str
    ) -> torch.Tensor:
        """``(batch,)`` int64 timesteps in ``[0, num_train_timesteps)``, drawn from ``generator`` on ``device``."""
        if self.distribution == "uniform":
            return torch.randint(0, num_train_timesteps, (batch,), generator=generator, device=device)
        normal = torch.randn(batch, generator=generator, device=device)  # (B,)
        return self._to_timesteps(torch.sigmoid(normal * self.scale + self.loc), num_train_timesteps)

    @staticmethod
    def _to_timesteps(fraction: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
        """Fractions of the schedule ``(B,)`` in [0, 1] -> int64 timesteps ``(B,)`` in ``[0, T)``."""
        return (fraction * num_train_timesteps).long().clamp_(0, num_train_timesteps - 1)
