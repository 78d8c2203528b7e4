"""What an edit starts from and keeps: a source's latents, how far down the grid to start, which cells stay.

* **Image-to-image** (SDEdit, Meng et al. 2022, https://arxiv.org/abs/2108.01073): the source latents are
  noised to the solver's first timestep and denoised from there under the new condition. The solver runs
  the last ``strength`` share of its grid (:meth:`~tinyldm.diffusion.solver.Solver.set_timesteps`):
  ``strength = 0`` returns the source, ``strength = 1`` starts from pure noise, as plain sampling does.
* **Inpainting** (blended latent diffusion, Avrahami et al. 2023, https://arxiv.org/abs/2206.02779): after
  every step the cells to keep are replaced by the source noised to the step's new timestep, so only the
  rest is generated, and at the end they are the source exactly. **RePaint** (Lugmayr et al. 2022,
  https://arxiv.org/abs/2201.09865) repeats each step ``resample_steps`` times, noising its result back up
  one step in between, so the generated region has time to agree with the kept one.

The sampling loop (:func:`~tinyldm.diffusion.sampling.sample`) takes a :class:`Source`; without one it draws
exactly as it always did.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from tinyldm.diffusion.noise_schedule import NoiseSchedule
from tinyldm.diffusion.solver import randn_from, validate_strength


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """An edit's source and how much of it stays.

    Args:
        latents: ``(B, C, h, w)`` the source images' scaled latents (what stage 2 diffuses).
        strength: the share of the solver's grid to run, in ``[0, 1]``.
        keep: ``(B or 1, 1, h, w)``, 1 on the latent cells the source keeps (inpainting), 0 where the model
            draws; ``None`` keeps nothing (image-to-image).
        resample_steps: RePaint's repeats of every step (1: none).
    """

    latents: Tensor
    strength: float = 1.0
    keep: Tensor | None = None
    resample_steps: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "strength", validate_strength(self.strength))
        steps = self.resample_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"resample_steps must be an integer >= 1 (1: no resampling), got {steps!r}")
        if self.keep is not None and (self.keep.ndim != 4 or self.keep.shape[1] != 1):
            raise ValueError(f"keep must be (B, 1, h, w) or (1, 1, h, w), got {tuple(self.keep.shape)}")

    def start(self, noise: Tensor, schedule: NoiseSchedule, timestep: int | None) -> Tensor:
        """``x`` at the first step ``(B, C, h, w)``: the noise itself at strength 1, the source noised to
        ``timestep`` below it, and the source as it is when no step runs (``timestep`` None)."""
        if timestep is None:
            return self.latents.clone()
        if self.strength == 1.0:
            return noise
        t = torch.full((noise.shape[0],), timestep, dtype=torch.long, device=noise.device)  # (B,)
        return schedule.add_noise(self.latents.to(noise.dtype), noise, t)

    def blend(self, x: Tensor, schedule: NoiseSchedule, timestep: int, generator: torch.Generator | None) -> Tensor:
        """After a step to ``timestep`` (-1: the clean end), the kept cells from the source noised to it."""
        if self.keep is None:
            return x
        known = self.latents.to(x.dtype)  # (B, C, h, w)
        if timestep >= 0:
            t = torch.full((x.shape[0],), timestep, dtype=torch.long, device=x.device)  # (B,)
            known = schedule.add_noise(known, randn_from(generator, x.shape, x), t)
        keep = self.keep.to(x.dtype)
        return keep * known + (1.0 - keep) * x  # (B, C, h, w)

    def renoise(
        self, x: Tensor, schedule: NoiseSchedule, timestep: int, previous: int, generator: torch.Generator | None
    ) -> Tensor:
        """RePaint's way back up: ``x`` at ``previous`` noised forward to ``timestep``, q(x_t | x_prev)."""
        alpha_bar_t, alpha_bar_prev = schedule.alpha_bars(timestep, previous, x.device)
        alpha = alpha_bar_t / alpha_bar_prev  # the one-step forward coefficient from ``previous`` to ``timestep``
        return alpha.sqrt() * x + (1.0 - alpha).sqrt() * randn_from(generator, x.shape, x)


def slerp(start: Tensor, end: Tensor, weights: Tensor) -> Tensor:
    """Spherical interpolation of two noise draws ``(B, C, h, w)`` per sample (``weights`` ``(B,)``): it keeps the
    norm a Gaussian draw has, which a straight line between two draws would shrink (Shoemake 1985)."""
    a, b = start.flatten(1).double(), end.flatten(1).double()  # (B, n)
    cosine = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    angle = cosine.clamp(-1.0, 1.0).acos()  # (B,)
    w = weights.double().to(a.device)
    sine = angle.sin()
    near = sine.abs() < 1e-6  # (nearly) the same draw: the straight line is the same path
    ratio_a = torch.where(near, 1.0 - w, ((1.0 - w) * angle).sin() / sine.where(~near, 1.0))
    ratio_b = torch.where(near, w, (w * angle).sin() / sine.where(~near, 1.0))
    mixed = ratio_a[:, None] * a + ratio_b[:, None] * b  # (B, n)
    return mixed.view_as(start).to(start.dtype)
