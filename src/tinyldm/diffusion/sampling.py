"""The reverse-diffusion sampling loop, and the one place for inference-time choices and guidance rules.

:class:`DiffusionSampler` holds only *inference-time* choices (which solver, how many steps,
``eta``, ``x0`` clipping, guidance scale and interval), so it is a small Hydra config
(``conf/sampler/*.yaml``). The *training-time* :class:`~tinyldm.diffusion.noise_schedule.NoiseSchedule`
is passed in per call, normally the one stored with the checkpoint: sampling with a different
schedule than the model was trained with is a silent, common bug, and keeping the two apart
makes it hard to commit.

Guidance rules, all here:

* the scale is validated once, when the sampler is built; its one default is the sampler config;
* a different scale for one call is a new, validated sampler: :meth:`DiffusionSampler.with_guidance`;
* ``uncond_context=None`` means the model is unconditional: every step uses the conditional
  prediction alone, whatever the scale (there is no null context to guide away from);
* ``guidance_interval`` limits guidance to a band of timesteps;
* ``guidance_method`` picks how the classifier-free term is applied: ``cfg`` or ``apg`` (projected);
* ``autoguidance_scale`` > 1 needs a guide (a weaker version of the model, passed to :meth:`sample`)
  and applies at every step, inside the interval or not.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from tinyldm.diffusion.ddim import DDIMScheduler, validate_eta
from tinyldm.diffusion.ddpm import DDPMScheduler
from tinyldm.diffusion.dpm_solver import DPMSolverMultistepScheduler
from tinyldm.diffusion.dpm_solver_sde import DPMSolverSDEMultistepScheduler, validate_noise_interval
from tinyldm.diffusion.guidance import (
    Denoiser,
    adaptive_projected,
    autoguided_prediction,
    classifier_free,
    paired_predictions,
    validate_autoguidance_scale,
    validate_guidance_scale,
)
from tinyldm.diffusion.noise_schedule import NoiseSchedule
from tinyldm.diffusion.solver import Solver, validate_clip, validate_interval
from tinyldm.diffusion.timestep_grid import SPACINGS_BY_KIND, logsnr_grid, validate_grid

#: how the classifier-free term is applied (``DiffusionSampler.guidance_method``)
GUIDANCE_METHODS: tuple[str, ...] = ("cfg", "apg")

#: the solver each ``DiffusionSampler.kind`` builds
SOLVERS: dict[str, type[Solver]] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "dpmpp_2m_sde": DPMSolverSDEMultistepScheduler,
}


def validate_guidance_interval(interval: Any) -> tuple[int, int] | None:
    """None, or ``[t_low, t_high]`` integers with ``0 <= t_low <= t_high``; anything else raises naming it."""
    return validate_interval("guidance_interval", interval, "[100, 600]")


def validate_apg(method: Any, eta: Any, momentum: Any) -> tuple[str, float, float]:
    """``(guidance_method, apg_eta, apg_momentum)`` normalised; anything not allowed raises naming it and the range."""
    if method not in GUIDANCE_METHODS:
        raise ValueError(f"guidance_method must be one of {', '.join(GUIDANCE_METHODS)}; got {method!r}")

    def finite(value: Any) -> bool:
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

    if not (finite(eta) and 0.0 <= eta <= 1.0):
        raise ValueError(f"apg_eta must be a number in [0, 1], got {eta!r}")
    if not (finite(momentum) and -1.0 < momentum < 1.0):
        raise ValueError(f"apg_momentum must be a number in (-1, 1), got {momentum!r}")
    return str(method), float(eta), float(momentum)


def guidance_method_record(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``guidance_method``, ``apg_eta`` and ``apg_momentum`` as results files record them, from sampler settings.

    The same three keys for every method, so a sweep's CSV has the same columns: the APG values are
    ``None`` for ``cfg``. Settings written before the choice existed mean ``cfg``; no settings at all
    (a samples file that names no sampler) give ``None`` throughout.
    """
    if not settings:
        return {"guidance_method": None, "apg_eta": None, "apg_momentum": None}
    method = settings.get("guidance_method", "cfg")
    apg = method == "apg"
    return {
        "guidance_method": method,
        "apg_eta": settings.get("apg_eta") if apg else None,
        "apg_momentum": settings.get("apg_momentum") if apg else None,
    }


@dataclasses.dataclass(frozen=True)
class DiffusionSampler:
    """Config-driven sampler: DDPM, DDIM or DPM-Solver++(2M) (ODE or SDE) steps with classifier-free guidance.

    Immutable, and every field is validated on construction (also by :func:`dataclasses.replace`),
    so a sampler that exists is a valid one.

    Args:
        kind: solver name in :data:`SOLVERS` (``"ddpm"``, ``"ddim"``, ``"dpmpp_2m"``, DPM-Solver++(2M)
            for 10-25 steps, or ``"dpmpp_2m_sde"``, its stochastic form: fresh noise each step).
        steps: number of inference steps (>= 1 and <= the schedule's ``num_train_timesteps``,
            checked by :meth:`check_schedule`). ``None`` means all ``T`` training steps (the
            classic 1000-step DDPM).
        eta: DDIM stochasticity (0 = deterministic). Must be >= 0; DDPM and DPM-Solver++ ignore it
            because ancestral sampling always adds its posterior noise, DPM-Solver++ adds none and
            its SDE form always adds its own.
        guidance_scale: classifier-free guidance scale ``s`` (``1`` = plain conditional,
            ``0`` = unconditional, ``> 1`` = stronger conditioning). Ignored for unconditional
            models (``uncond_context=None`` in :meth:`sample`).
        guidance_interval: ``[t_low, t_high]`` training timesteps (inclusive) where guidance
            applies; elsewhere the step uses the plain conditional prediction (one forward of
            ``B``, not ``2B``). ``None`` guides every step. Kynkäänniemi et al. 2024, "Applying
            guidance in a limited interval improves sample and distribution quality in diffusion
            models" (https://arxiv.org/abs/2404.07724): at high noise, strong guidance pulls every
            sample of a class towards one layout (less variety); at low noise it only sharpens
            details the condition no longer decides.
        guidance_method: ``"cfg"`` (classifier-free guidance) or ``"apg"``, adaptive projected guidance
            (Sadat et al. 2024, https://arxiv.org/abs/2410.02416; :mod:`~tinyldm.diffusion.guidance`): the
            same two predictions, combined on their ``x0`` estimates with the part of the update that
            is parallel to the conditional estimate scaled by ``apg_eta`` and a ``apg_momentum``
            times the previous guided step's update added. Same cost per step as ``cfg``.
        apg_eta: APG's weight of the parallel component, in ``[0, 1]`` (``1`` and momentum ``0``: CFG).
        apg_momentum: APG's ``beta``, in ``(-1, 1)``; negative damps an update that keeps its direction.
        clip_sample: clamp each step's predicted ``x0`` to ``[-clip_sample_range, clip_sample_range]``.
            Off by default: latents are not bounded like pixels.
        clip_sample_range: the bound used when ``clip_sample`` is on.
        timestep_spacing: the timestep grid (:mod:`~tinyldm.diffusion.timestep_grid`): ``None`` is the kind's own
            (DDPM and DDIM ``"leading"``, DPM-Solver++ ``"trailing"``); DPM-Solver++ also takes ``"logsnr"``,
            steps evenly spaced in half log-SNR over ``logsnr_range``, which at 20 steps lands about 2x closer to
            the many-step solution of the guided ODE (docs/experiments/sampler-lever.md).
        logsnr_range: ``[lambda_noisy, lambda_clean]`` for ``"logsnr"`` (e.g. ``[-3.5, 3.0]``); ``None`` otherwise.
        noise_interval: ``"dpmpp_2m_sde"`` only: ``[t_low, t_high]`` timesteps (inclusive) of the steps that add the
            SDE's noise, the others deterministic (:mod:`~tinyldm.diffusion.dpm_solver_sde`); ``None``: every step.
        autoguidance_scale: ``w`` of autoguidance (Karras et al. 2024, "Guiding a diffusion model with a
            bad version of itself", https://arxiv.org/abs/2406.02507; :mod:`~tinyldm.diffusion.guidance`):
            each step adds ``(w - 1) * (cond - guide(x_t, t, c))``. ``1`` is off; above 1, :meth:`sample`
            needs the ``guide`` denoiser (a stage-2 model trained with ``diffusion.guide_at`` keeps one).
    """

    kind: str = "ddim"
    steps: int | None = 50
    eta: float = 0.0
    guidance_scale: float = 3.0
    guidance_interval: tuple[int, int] | None = None
    guidance_method: str = "cfg"
    apg_eta: float = 0.0
    apg_momentum: float = 0.0
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    autoguidance_scale: float = 1.0
    timestep_spacing: str | None = None
    logsnr_range: tuple[float, float] | None = None
    noise_interval: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOLVERS:
            raise ValueError(f"kind must be one of {', '.join(SOLVERS)}; got {self.kind!r}")
        steps = self.steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be an integer >= 1 or None (all training steps), got {steps!r}")
        normalised = {
            "eta": validate_eta(self.eta),
            "guidance_scale": validate_guidance_scale(self.guidance_scale),
            "guidance_interval": validate_guidance_interval(self.guidance_interval),
            "autoguidance_scale": validate_autoguidance_scale(self.autoguidance_scale),
            "noise_interval": validate_noise_interval(self.noise_interval, self.kind),
        }
        normalised["guidance_method"], normalised["apg_eta"], normalised["apg_momentum"] = validate_apg(
            self.guidance_method, self.apg_eta, self.apg_momentum
        )
        normalised["clip_sample"], normalised["clip_sample_range"] = validate_clip(
            self.clip_sample, self.clip_sample_range
        )
        normalised["timestep_spacing"], normalised["logsnr_range"] = validate_grid(
            self.kind, self.timestep_spacing, self.logsnr_range
        )
        for name, value in normalised.items():
            object.__setattr__(self, name, value)  # frozen: store the validated, normalised values

    def as_config(self) -> dict[str, Any]:
        """The plain config that builds this sampler again (``_target_`` included), as results files record it."""
        fields = dataclasses.asdict(self)
        plain = {key: list(value) if isinstance(value, tuple) else value for key, value in fields.items()}
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", **plain}

    def with_guidance(self, guidance_scale: float) -> DiffusionSampler:
        """This sampler with another guidance scale, validated like the config's (a per-call scale)."""
        return dataclasses.replace(self, guidance_scale=guidance_scale)

    def guidance_method_settings(self) -> dict[str, Any]:
        """What a results file records of this sampler's guidance method (:func:`guidance_method_record`)."""
        return guidance_method_record(dataclasses.asdict(self))

    @property
    def grid_spacing(self) -> str:
        """The timestep grid this sampler's solver walks: ``timestep_spacing``, or the kind's own when unset."""
        return self.timestep_spacing or SPACINGS_BY_KIND[self.kind][0]

    @property
    def uses_guide(self) -> bool:
        """Whether :meth:`sample` needs a ``guide`` denoiser (autoguidance on)."""
        return self.autoguidance_scale != 1.0

    def check_schedule(self, schedule: NoiseSchedule) -> int:
        """The number of steps this sampler takes on ``schedule`` (call it to refuse a bad pair before any work).

        Raises:
            ValueError: ``steps`` exceeds the schedule's ``num_train_timesteps``, or the ``logsnr`` grid does not
                fit the schedule (range outside its half log-SNR, or too narrow for ``steps`` timesteps).
        """
        steps = schedule.num_train_timesteps if self.steps is None else self.steps
        if steps > schedule.num_train_timesteps:
            raise ValueError(
                f"steps={steps} exceeds the noise schedule's num_train_timesteps={schedule.num_train_timesteps}; "
                "a sampler cannot visit more timesteps than the model was trained on"
            )
        if self.logsnr_range is not None and steps < schedule.num_train_timesteps:
            logsnr_grid(schedule.alphas_cumprod, steps, self.logsnr_range)  # raises naming what does not fit
        return steps

    def build_solver(self, schedule: NoiseSchedule) -> Solver:
        """A fresh solver of this sampler's ``kind`` on ``schedule``, with the inference grid set.

        Raises:
            TypeError: ``schedule`` is not a :class:`NoiseSchedule`.
            ValueError: ``steps`` exceeds the schedule's ``num_train_timesteps`` (:meth:`check_schedule`).
        """
        options: dict[str, Any] = {"clip_sample": self.clip_sample, "clip_sample_range": self.clip_sample_range}
        if self.kind == "ddim":
            options["eta"] = self.eta
        if issubclass(SOLVERS[self.kind], DPMSolverMultistepScheduler):
            options.update(timestep_spacing=self.grid_spacing, logsnr_range=self.logsnr_range)
        if issubclass(SOLVERS[self.kind], DPMSolverSDEMultistepScheduler):
            options["noise_interval"] = self.noise_interval
        solver = SOLVERS[self.kind](schedule, **options)  # refuses anything but a NoiseSchedule
        solver.set_timesteps(self.check_schedule(schedule))
        return solver

    @torch.no_grad()
    def sample(
        self,
        denoiser: Denoiser,
        schedule: NoiseSchedule,
        shape: Sequence[int],
        cond_context: Tensor,
        uncond_context: Tensor | None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        return_trajectory_at: Iterable[int] | None = None,
        cond_mask: Tensor | None = None,
        uncond_mask: Tensor | None = None,
        guide: Denoiser | None = None,
        guide_context: Tensor | None = None,
        guide_mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, dict[int, Tensor]]:
        """Draw samples by running the reverse process from pure noise.

        Args:
            denoiser: ``denoiser(x_t (B,C,H,W), t (B,) long, context (B,L,D)) -> (B,C,H,W)``;
                put modules in ``eval()`` mode before calling.
            schedule: the training noise schedule (see :meth:`build_solver`).
            shape: ``(B, C, H, W)`` of the samples (latents, for an LDM).
            cond_context: ``(B, L, D)`` conditioning; its device is where sampling runs.
            uncond_context: ``(B, L, D)`` or ``(1, L, D)`` null conditioning, or ``None`` for an
                unconditional model: then every step uses the conditional prediction only,
                whatever :attr:`guidance_scale` says.
            generator: seeds the initial noise and every stochastic step, so a fixed
                seed gives identical samples. A CPU generator works for GPU sampling too
                (noise is drawn on the generator's device, then moved).
            progress: show a ``rich`` progress bar over the steps.
            return_trajectory_at: timesteps at which to record the predicted ``x0``
                (for a denoising-trajectory strip). Each is snapped to the nearest
                timestep on the inference grid; the returned dict is keyed by those grid
                timesteps in sampling order (descending).
            cond_mask: ``(B, L)`` bool key-padding mask of ``cond_context`` (False = padding), for
                conditioners whose token sequences vary in length (text prompts); ``None`` means every
                token is real. With a mask the denoiser is called as ``denoiser(x_t, t, context, context_mask)``.
            uncond_mask: ``(1, L)``, the same for ``uncond_context``.
            guide: the weaker denoiser autoguidance extrapolates away from, called like ``denoiser`` on
                the conditional batch; required when :attr:`uses_guide`, unused otherwise.
            guide_context: ``(B, L', D')``, the same conditions as the guide's own conditioner encodes
                them (a guide with its own conditioner weights reads its own tokens); ``None``: the
                guide reads ``cond_context``.
            guide_mask: ``(B, L')``, its key-padding mask; ``None``: the guide reads ``cond_mask``.

        Returns:
            The final ``x0`` ``(B, C, H, W)`` in float32, or ``(x0, {t: x0_hat_t})`` if
            ``return_trajectory_at`` is given.

        With ``guidance_scale == 1`` the unconditional half is skipped: the network runs
        on the conditional batch only (half the compute), and the result is exactly the
        cond-only sample rather than ``uncond + 1 * (cond - uncond)`` up to round-off.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2 or shape[0] != cond_context.shape[0]:
            raise ValueError(
                f"shape must be (B, C, ...) with B = cond_context.shape[0]={cond_context.shape[0]}, got {shape}"
            )
        guided = uncond_context is not None and self.guidance_scale != 1.0
        if self.uses_guide and guide is None:
            raise ValueError(
                f"autoguidance_scale={self.autoguidance_scale:g} needs a guide denoiser, and none was given; "
                "set autoguidance_scale=1 (off) or pass the guide"
            )
        if guide_context is None:
            guide_context, guide_mask = cond_context, cond_mask
        guide_conditioning = (guide_context,) if guide_mask is None else (guide_context, guide_mask)

        solver = self.build_solver(schedule)
        device = cond_context.device
        grid = [int(t) for t in solver.timesteps]  # descending
        record = self._snap_to_grid(return_trajectory_at, grid) if return_trajectory_at is not None else set()
        trajectory: dict[int, Tensor] = {}

        draw_device = generator.device if generator is not None else device
        x = torch.randn(shape, generator=generator, device=draw_device).to(device)  # (B, C, H, W) x_T ~ N(0, I)
        apg_update: Tensor | None = None  # APG's update of the last guided step (its momentum term)

        for t in self._maybe_track(grid, progress):
            t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)  # (B,)
            conditioning = (cond_context,) if cond_mask is None else (cond_context, cond_mask)
            if guided and self.guides_at(t):
                pred_cond, pred_uncond = paired_predictions(
                    denoiser, x, t_batch, cond_context, uncond_context, cond_mask, uncond_mask
                )  # 2 x (B, C, H, W)
                if self.guidance_method == "apg":
                    model_output, apg_update = self._apg(schedule, t, x, pred_cond, pred_uncond, apg_update)
                else:
                    model_output = classifier_free(pred_cond, pred_uncond, self.guidance_scale)  # (B, C, H, W)
            else:
                pred_cond = model_output = denoiser(x, t_batch, *conditioning)  # (B, C, H, W)
            if self.uses_guide:
                pred_guide = guide(x, t_batch, *guide_conditioning)  # (B, C, H, W)
                model_output = autoguided_prediction(model_output, pred_cond, pred_guide, self.autoguidance_scale)
            out = solver.step(model_output, t, x, generator=generator)
            x = out.prev_sample  # (B, C, H, W)
            if t in record:
                trajectory[t] = out.pred_original_sample.clone()

        if return_trajectory_at is not None:
            return x, trajectory
        return x

    def _apg(
        self,
        schedule: NoiseSchedule,
        t: int,
        x: Tensor,
        pred_cond: Tensor,
        pred_uncond: Tensor,
        previous: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """APG of one step: (network output for the solver, the update to carry), each ``(B, C, H, W)``.

        APG is defined on denoised estimates, so both predictions go to ``x0`` and the guided
        estimate comes back as the network output that :meth:`NoiseSchedule.predict_x0` maps to it.
        In float32 whatever the autocast dtype, as the solvers' own conversions are.
        """
        alpha_bar_t = schedule.alpha_bars(t, t, x.device)[0]
        x = x.float()
        x0_cond = schedule.predict_x0(pred_cond.float(), x, alpha_bar_t)  # (B, C, H, W)
        x0_uncond = schedule.predict_x0(pred_uncond.float(), x, alpha_bar_t)  # (B, C, H, W)
        x0, update = adaptive_projected(
            x0_cond, x0_uncond, self.guidance_scale, self.apg_eta, self.apg_momentum, previous
        )  # 2 x (B, C, H, W)
        return schedule.output_from_x0(x0, x, alpha_bar_t), update

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
