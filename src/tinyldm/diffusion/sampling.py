"""The reverse-diffusion sampling loop with classifier-free guidance.

:class:`DiffusionSampler` holds only *inference-time* choices (which scheduler, how many
steps, ``eta``, guidance scale), so it can be a small Hydra config
(``conf/sampler/*.yaml``). The *training-time* noise schedule is passed in per call as a
scheduler config dict, normally the one stored with the checkpoint: sampling with a
different schedule than the model was trained with is a silent, common bug, and keeping
the two apart makes it hard to commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from tinyldm.diffusion.guidance import Denoiser, guided_prediction, validate_guidance_scale
from tinyldm.diffusion.scheduler_base import _NoiseScheduler
from tinyldm.diffusion.schedulers import SCHEDULERS


def validate_guidance_interval(interval: Any) -> tuple[int, int] | None:
    """None, or ``[t_low, t_high]`` integers with ``0 <= t_low <= t_high``; anything else raises naming it."""
    if interval is None:
        return None
    values = list(interval) if isinstance(interval, Sequence) and not isinstance(interval, str) else None
    if (values is None or len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in values)
            or not 0 <= values[0] <= values[1]):
        raise ValueError(f"guidance_interval={interval!r} must be null or [t_low, t_high], integer timesteps with "
                         "0 <= t_low <= t_high (e.g. [100, 600])")
    return values[0], values[1]


class DiffusionSampler:
    """Config-driven sampler: DDPM, DDIM or DPM-Solver++(2M) steps with classifier-free guidance.

    Args:
        kind: scheduler name in :data:`~tinyldm.diffusion.schedulers.SCHEDULERS`
            (``"ddpm"``, ``"ddim"`` or ``"dpmpp_2m"``, DPM-Solver++(2M) for 10-25 steps).
        steps: number of inference steps (>= 1 and <= the scheduler's
            ``num_train_timesteps``, checked in :meth:`sample`). ``None`` means all
            ``T`` training steps (the classic 1000-step DDPM).
        eta: DDIM stochasticity (0 = deterministic). Must be >= 0; DDPM and DPM-Solver++ ignore it
            because ancestral sampling always adds its posterior noise.
        guidance_scale: default classifier-free guidance scale ``s`` (``1`` = plain
            conditional, ``0`` = unconditional, ``> 1`` = stronger conditioning).
        guidance_interval: ``[t_low, t_high]`` training timesteps (inclusive) where guidance
            applies; elsewhere the step uses the plain conditional prediction (one forward of
            ``B``, not ``2B``). ``None`` guides every step. Kynkäänniemi et al. 2024, "Applying
            guidance in a limited interval improves sample and distribution quality in diffusion
            models" (https://arxiv.org/abs/2404.07724): at high noise, strong guidance pulls every
            sample of a class towards one layout (less variety); at low noise it only sharpens
            details the condition no longer decides.
    """

    def __init__(
        self,
        kind: str = "ddim",
        steps: int | None = 50,
        eta: float = 0.0,
        guidance_scale: float = 3.0,
        guidance_interval: Sequence[int] | None = None,
    ) -> None:
        if kind not in SCHEDULERS:
            raise ValueError(f"kind must be one of {', '.join(SCHEDULERS)}; got {kind!r}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be an integer >= 1 or None (all training steps), got {steps!r}")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (0.0 <= eta < float("inf")):
            raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
        self.kind = kind
        self.steps = steps
        self.eta = float(eta)
        self.guidance_scale = validate_guidance_scale(guidance_scale)
        self.guidance_interval = validate_guidance_interval(guidance_interval)

    def __repr__(self) -> str:
        return (
            f"DiffusionSampler(kind={self.kind!r}, steps={self.steps!r}, eta={self.eta!r}, "
            f"guidance_scale={self.guidance_scale!r}, guidance_interval={self.guidance_interval!r})"
        )

    def build_scheduler(self, scheduler_config: Mapping[str, Any] | _NoiseScheduler) -> _NoiseScheduler:
        """Scheduler of this sampler's ``kind`` with the training schedule and the inference grid set.

        Args:
            scheduler_config: the training scheduler's ``config`` dict (a Hydra node with
                ``_target_`` is fine), or a scheduler instance whose config is reused.

        Raises:
            ValueError: ``steps`` exceeds the schedule's ``num_train_timesteps``.
        """
        config = scheduler_config.config if isinstance(scheduler_config, _NoiseScheduler) else scheduler_config
        scheduler = SCHEDULERS[self.kind].from_config(config)
        steps = scheduler.num_train_timesteps if self.steps is None else self.steps
        if steps > scheduler.num_train_timesteps:
            raise ValueError(
                f"steps={steps} exceeds the scheduler's num_train_timesteps={scheduler.num_train_timesteps}; "
                "a sampler cannot visit more timesteps than the model was trained on"
            )
        scheduler.set_timesteps(steps)
        return scheduler

    @torch.no_grad()
    def sample(
        self,
        denoiser: Denoiser,
        scheduler_config: Mapping[str, Any] | _NoiseScheduler,
        shape: Sequence[int],
        cond_context: Tensor,
        uncond_context: Tensor | None,
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
        progress: bool = False,
        return_trajectory_at: Iterable[int] | None = None,
    ) -> Tensor | tuple[Tensor, dict[int, Tensor]]:
        """Draw samples by running the reverse process from pure noise.

        Args:
            denoiser: ``denoiser(x_t (B,C,H,W), t (B,) long, context (B,L,D)) -> (B,C,H,W)``;
                put modules in ``eval()`` mode before calling.
            scheduler_config: training scheduler config (see :meth:`build_scheduler`).
            shape: ``(B, C, H, W)`` of the samples (latents, for an LDM).
            cond_context: ``(B, L, D)`` conditioning; its device is where sampling runs.
            uncond_context: ``(B, L, D)`` or ``(1, L, D)`` null conditioning. May be
                ``None`` only when the guidance scale is 1.
            generator: seeds the initial noise and every stochastic step, so a fixed
                seed gives identical samples. A CPU generator works for GPU sampling too
                (noise is drawn on the generator's device, then moved).
            guidance_scale: overrides the sampler's default for this call.
            progress: show a ``rich`` progress bar over the steps.
            return_trajectory_at: timesteps at which to record the predicted ``x0``
                (for a denoising-trajectory strip). Each is snapped to the nearest
                timestep on the inference grid; the returned dict is keyed by those grid
                timesteps in sampling order (descending).

        Returns:
            The final ``x0`` ``(B, C, H, W)`` in float32, or ``(x0, {t: x0_hat_t})`` if
            ``return_trajectory_at`` is given.

        With ``guidance_scale == 1`` the unconditional half is skipped: the network runs
        on the conditional batch only (half the compute), and the result is exactly the
        cond-only sample rather than ``uncond + 1 * (cond - uncond)`` up to round-off.
        """
        scale = self.guidance_scale if guidance_scale is None else validate_guidance_scale(guidance_scale)
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2 or shape[0] != cond_context.shape[0]:
            raise ValueError(
                f"shape must be (B, C, ...) with B = cond_context.shape[0]={cond_context.shape[0]}, got {shape}"
            )
        if uncond_context is None and scale != 1.0:
            raise ValueError(f"uncond_context is required for guidance_scale={scale} (only 1.0 skips it)")

        scheduler = self.build_scheduler(scheduler_config)
        device = cond_context.device
        grid = [int(t) for t in scheduler.timesteps]  # descending
        record = self._snap_to_grid(return_trajectory_at, grid) if return_trajectory_at is not None else set()
        trajectory: dict[int, Tensor] = {}

        draw_device = generator.device if generator is not None else device
        x = torch.randn(shape, generator=generator, device=draw_device).to(device)  # (B, C, H, W) x_T ~ N(0, I)
        step_kwargs: dict[str, Any] = {"eta": self.eta} if self.kind == "ddim" else {}

        for t in self._maybe_track(grid, progress):
            t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)  # (B,)
            if scale == 1.0 or not self.guides_at(t):
                model_output = denoiser(x, t_batch, cond_context)  # (B, C, H, W)
            else:
                model_output = guided_prediction(denoiser, x, t_batch, cond_context, uncond_context, scale)
            out = scheduler.step(model_output, t, x, generator=generator, **step_kwargs)
            x = out.prev_sample  # (B, C, H, W)
            if t in record:
                trajectory[t] = out.pred_original_sample.clone()

        if return_trajectory_at is not None:
            return x, trajectory
        return x

    def guides_at(self, t: int) -> bool:
        """Whether guidance applies at timestep ``t`` (always without an interval)."""
        if self.guidance_interval is None:
            return True
        low, high = self.guidance_interval
        return low <= t <= high

    @staticmethod
    def _snap_to_grid(requested: Iterable[int], grid: list[int]) -> set[int]:
        """Map each requested timestep to the closest grid timestep (ties go to the noisier one)."""
        snapped = set()
        for t in requested:
            t = int(t)
            snapped.add(min(grid, key=lambda g: (abs(g - t), -g)))
        return snapped

    @staticmethod
    def _maybe_track(grid: list[int], progress: bool) -> Iterable[int]:
        if not progress:
            return grid
        from rich.progress import track  # imported lazily: only needed for interactive runs

        return track(grid, description="sampling", total=len(grid), transient=True)
