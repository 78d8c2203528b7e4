"""Which timesteps a training batch is noised to.

DDPM draws ``t`` uniformly from ``[0, T)``. Esser et al. 2024 ("Scaling Rectified Flow Transformers
for High-Resolution Image Synthesis", https://arxiv.org/abs/2403.03206, section 3.1) draw it from a
logit-normal instead, ``t / T = sigmoid(n)`` with ``n ~ N(loc, scale**2)``: with ``loc = 0`` the
training compute goes to the middle of the noise range (SNR near 1 under the cosine schedule), where
predicting the target is hardest, and less to the nearly clean and nearly pure-noise ends, where it
is easy; ``loc > 0`` moves it towards the noisy steps. The sampling density multiplies any per-step
loss weight (min-SNR), so the two together set how much each noise level counts.

``stratified`` draws a batch's ``B`` timesteps one from each of ``B`` equal-probability slices of
the same distribution (the "low-discrepancy sampler" of Kingma et al. 2021, "Variational Diffusion
Models", https://arxiv.org/abs/2107.00630, appendix I.2): every batch then covers the whole noise
range evenly instead of by chance, which lowers the variance of the batch loss without changing
its expectation. A short run (hundreds of steps) is where that variance should matter most; on the
main job it did not help (docs/experiments/training-levers.md), so it is off by default.
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
    """How training timesteps are drawn (``diffusion.timestep_sampling``); refuses bad values on creation."""

    distribution: str = "uniform"
    loc: float = 0.0  # logit_normal: mean of n (0 = the middle of the noise range, > 0 = noisier)
    scale: float = 1.0  # logit_normal: standard deviation of n (larger = more draws near both ends)
    stratified: bool = False  # one draw per equal-probability slice of the distribution, per batch

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"diffusion.timestep_sampling.distribution={self.distribution!r}; allowed: {', '.join(DISTRIBUTIONS)}"
            )
        for name, low in (("loc", -math.inf), ("scale", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < math.inf:
                allowed = "a finite number" if name == "loc" else "a finite number > 0"
                raise ValueError(f"diffusion.timestep_sampling.{name}={value!r} must be {allowed}")
        if not isinstance(self.stratified, bool):
            raise ValueError(f"diffusion.timestep_sampling.stratified={self.stratified!r} must be true or false")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> TimestepSampling:
        """``None`` (checkpoints from before this option) is uniform; unknown keys are refused by name."""
        config = dict(config or {})
        unknown = sorted(set(config) - {"distribution", "loc", "scale", "stratified"})
        if unknown:
            raise ValueError(
                f"diffusion.timestep_sampling has unknown key(s) {unknown}; "
                "allowed: distribution, loc, scale, stratified"
            )
        return cls(**config)

    def sample(
        self, batch: int, num_train_timesteps: int, generator: torch.Generator | None, device: torch.device | str
    ) -> torch.Tensor:
        """``(batch,)`` int64 timesteps in ``[0, num_train_timesteps)``, drawn from ``generator`` on ``device``."""
        if self.stratified:
            u = self._stratified_quantiles(batch, generator, device)  # (B,) in [0, 1)
            if self.distribution == "uniform":
                return self._to_timesteps(u, num_train_timesteps)
            tiny = torch.finfo(u.dtype).eps
            normal = torch.special.ndtri(u.clamp(tiny, 1.0 - tiny))  # (B,): the standard normal's quantiles
        elif self.distribution == "uniform":
            return torch.randint(0, num_train_timesteps, (batch,), generator=generator, device=device)
        else:
            normal = torch.randn(batch, generator=generator, device=device)  # (B,)
        return self._to_timesteps(torch.sigmoid(normal * self.scale + self.loc), num_train_timesteps)

    @staticmethod
    def _stratified_quantiles(
        batch: int, generator: torch.Generator | None, device: torch.device | str
    ) -> torch.Tensor:
        """``(batch,)`` probabilities, one uniform draw inside each slice ``[i / B, (i + 1) / B)``, in random order."""
        jitter = torch.rand(batch, generator=generator, device=device)  # (B,)
        order = torch.randperm(batch, generator=generator, device=device)  # (B,): which slice each sample gets
        return (order + jitter) / batch  # (B,) in [0, 1)

    @staticmethod
    def _to_timesteps(fraction: torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
        """Fractions of the schedule ``(B,)`` in [0, 1] -> int64 timesteps ``(B,)`` in ``[0, T)``."""
        return (fraction * num_train_timesteps).long().clamp_(0, num_train_timesteps - 1)
