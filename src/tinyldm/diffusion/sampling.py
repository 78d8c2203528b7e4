"""The reverse-diffusion sampling loop: a solver steps, a guidance rule decides each step's network output.

Three objects meet here, each built from its own config and each validated once, when it is built:

* the **solver** (``conf/sampler/*.yaml``: :data:`SOLVERS`), which turns a network output into one
  reverse step along its timestep grid;
* the **guidance** (``conf/guidance/*.yaml``: :data:`GUIDANCES`), which decides what network calls a
  step makes and how they combine (classifier-free or adaptive projected guidance, autoguidance);
* the **noise schedule** the model was trained with, stored with the checkpoint and passed in per
  call: sampling with a different schedule than the model was trained with is a silent, common bug,
  and keeping it apart from the inference-time choices makes it hard to commit.

Any solver composes with any guidance (``python evaluate.py -m ckpt=… sampler=ddim,dpmpp_2m
guidance.scale=1,2,3``).

Checkpoints and samples files written before 0.3 stored one ``sampler`` config holding both the
solver's and the guidance's settings (``kind``, ``guidance_scale``, ``apg_momentum``, ...);
:func:`split_legacy_sampler` turns it into the two, with the same meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor

from tinyldm.diffusion.ddim import DDIMSolver
from tinyldm.diffusion.ddpm import DDPMSolver
from tinyldm.diffusion.dpm_solver import DPMSolver2M
from tinyldm.diffusion.dpm_solver_sde import DPMSolver2MSDE
from tinyldm.diffusion.editing import Source
from tinyldm.diffusion.guidance import (
    AdaptiveProjectedGuidance,
    ClassifierFreeGuidance,
    Denoiser,
    paired_predictions,
)
from tinyldm.diffusion.noise_schedule import NoiseSchedule
from tinyldm.diffusion.solver import Solver

#: ``progress``: False, True (a ``rich`` bar in the terminal) or ``report(done, total)``, called after each step
#: (a web page's progress bar; diffusers' ``callback_on_step_end`` plays this part)
Progress: TypeAlias = "bool | Callable[[int, int], None]"

#: the solvers, by the name of the ``conf/sampler/`` file that builds each
SOLVERS: dict[str, type[Solver]] = {cls.name: cls for cls in (DDPMSolver, DDIMSolver, DPMSolver2M, DPMSolver2MSDE)}
#: the guidance rules, by the name of the ``conf/guidance/`` file that builds each
GUIDANCES: dict[str, type[ClassifierFreeGuidance]] = {
    cls.name: cls for cls in (ClassifierFreeGuidance, AdaptiveProjectedGuidance)
}


class ConditionedDenoiser:
    """A denoiser bound to one batch's conditions: the network calls a guidance rule can make.

    Args:
        denoiser: ``denoiser(x_t (B,C,H,W), t (B,) long, context (B,L,D)[, mask (B,L)]) -> (B,C,H,W)``, in
            ``eval()`` mode.
        cond_context: ``(B, L, D)`` conditioning; its device is where sampling runs.
        cond_mask: ``(B, L)`` bool key-padding mask of ``cond_context`` (False = padding), for conditioners
            whose token sequences vary in length (text prompts); ``None``: every token is real. With a mask
            the denoiser is called as ``denoiser(x_t, t, context, context_mask)``.
        uncond_context: ``(B, L, D)`` or ``(1, L, D)`` null conditioning, or ``None`` for an unconditional
            model: then every step uses the conditional output alone, whatever the guidance scale.
        uncond_mask: ``(1, L)`` or ``(B, L)``, the same for ``uncond_context``.
        guide: the weaker denoiser autoguidance extrapolates away from, called like ``denoiser``.
        guide_context: ``(B, L', D')``, the same conditions as the guide's own conditioner encodes them (a guide
            with its own conditioner weights reads its own tokens); ``None``: the guide reads ``cond_context``.
        guide_mask: ``(B, L')``, its key-padding mask; ``None`` with ``guide_context=None``: ``cond_mask``.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        cond_context: Tensor,
        cond_mask: Tensor | None = None,
        uncond_context: Tensor | None = None,
        uncond_mask: Tensor | None = None,
        guide: Denoiser | None = None,
        guide_context: Tensor | None = None,
        guide_mask: Tensor | None = None,
    ) -> None:
        self.denoiser, self.guide_denoiser = denoiser, guide
        self.cond_context, self.cond_mask = cond_context, cond_mask
        self.uncond_context, self.uncond_mask = uncond_context, uncond_mask
        if guide_context is None:
            guide_context, guide_mask = cond_context, cond_mask
        self.guide_context, self.guide_mask = guide_context, guide_mask

    @property
    def batch_size(self) -> int:
        return int(self.cond_context.shape[0])

    @classmethod
    def between(cls, start: ConditionedDenoiser, end: ConditionedDenoiser, weights: Tensor) -> ConditionedDenoiser:
        """The conditions ``(1 - w) * start + w * end`` per sample (``weights`` ``(B,)`` in [0, 1]): interpolation.

        Contexts are blended linearly (the unconditional side is ``start``'s). Padding masks (text prompts of
        different lengths) are ``start``'s at weight 0, ``end``'s at 1, and their union between, so both
        ends are exactly the plain conditions.
        """
        w = weights.to(start.cond_context.dtype)

        def mix(a: Tensor | None, b: Tensor | None) -> Tensor | None:
            if a is None:
                return None
            return torch.lerp(a, b, w.view(-1, *([1] * (a.ndim - 1))))  # (B, L, D)

        def mask(a: Tensor | None, b: Tensor | None) -> Tensor | None:
            if a is None:
                return None
            union = a | b  # (B, L)
            return torch.where((w == 0).view(-1, 1), a, torch.where((w == 1).view(-1, 1), b, union))

        return cls(
            start.denoiser,
            mix(start.cond_context, end.cond_context),
            mask(start.cond_mask, end.cond_mask),
            start.uncond_context,
            start.uncond_mask,
            start.guide_denoiser,
            mix(start.guide_context, end.guide_context),
            mask(start.guide_mask, end.guide_mask),
        )

    @property
    def unconditional(self) -> bool:
        return self.uncond_context is None

    def conditional(self, x: Tensor, t: Tensor) -> Tensor:
        """``(B, C, H, W)``: the model's output under the batch's conditions."""
        mask = () if self.cond_mask is None else (self.cond_mask,)
        return self.denoiser(x, t, self.cond_context, *mask)

    def paired(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Conditional and unconditional outputs, ``(B, C, H, W)`` each, from one batched forward."""
        if self.uncond_context is None:
            raise ValueError("an unconditional model has no null context to pair with")
        return paired_predictions(
            self.denoiser, x, t, self.cond_context, self.uncond_context, self.cond_mask, self.uncond_mask
        )

    def guide(self, x: Tensor, t: Tensor) -> Tensor:
        """``(B, C, H, W)``: the autoguidance guide's output under the batch's conditions."""
        if self.guide_denoiser is None:
            raise ValueError("autoguidance needs a guide denoiser, and none was given; set guidance.autoguidance=1")
        mask = () if self.guide_mask is None else (self.guide_mask,)
        return self.guide_denoiser(x, t, self.guide_context, *mask)


@torch.no_grad()
def sample(
    model: ConditionedDenoiser,
    schedule: NoiseSchedule,
    solver: Solver,
    guidance: ClassifierFreeGuidance,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    progress: Progress = False,
    trajectory_at: Iterable[int] | None = None,
    source: Source | None = None,
    noise: Tensor | None = None,
) -> Tensor | tuple[Tensor, dict[int, Tensor]]:
    """Draw samples ``(B, C, H, W)`` by running the reverse process from pure noise, or edit a source.

    Args:
        model: the denoiser and the batch's conditions (and the guide, for autoguidance).
        schedule: the training noise schedule (stored with the checkpoint).
        solver: steps along its grid on ``schedule``; its trajectory state is reset here.
        guidance: what each step's network output is (:class:`~tinyldm.diffusion.guidance.ClassifierFreeGuidance`).
        shape: ``(B, C, H, W)`` of the samples (latents, for an LDM), ``B`` the conditions' batch.
        generator: seeds the initial noise and every stochastic step, so a fixed seed gives identical
            samples. A CPU generator works for GPU sampling too (noise is drawn on the generator's
            device, then moved).
        progress: show a ``rich`` progress bar over the steps (True), or call ``progress(done, total)`` after each.
        trajectory_at: timesteps at which to record the predicted ``x0`` (for a denoising-trajectory
            strip), each snapped to the nearest grid timestep.
        source: an edit's source (:class:`~tinyldm.diffusion.editing.Source`): start part-way down the grid
            from its latents (image-to-image) and keep part of it at every step (inpainting). The draws
            from ``generator`` start as plain sampling's, so strength 1 with nothing kept is plain sampling.
        noise: the starting noise ``(B, C, H, W)`` instead of a draw from ``generator`` (interpolation
            between two seeds); the solver's own noise still comes from ``generator``.

    Returns:
        The final ``x0`` ``(B, C, H, W)`` in float32, or ``(x0, {t: x0_hat_t})`` with ``trajectory_at``,
        keyed by the grid timesteps in sampling order (descending).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or shape[0] != model.batch_size:
        raise ValueError(f"shape must be (B, C, ...) with B = the conditions' batch {model.batch_size}, got {shape}")
    if guidance.uses_guide and model.guide_denoiser is None:
        raise ValueError(
            f"guidance.autoguidance={guidance.autoguidance:g} needs a guide denoiser, and none was given; "
            "set guidance.autoguidance=1 (off) or pass the guide"
        )
    device = model.cond_context.device
    solver.set_timesteps(schedule, strength=source.strength if source is not None else 1.0)
    grid = [int(t) for t in solver.timesteps]  # descending
    record = _snap_to_grid(trajectory_at, grid) if trajectory_at is not None and grid else set()
    trajectory: dict[int, Tensor] = {}

    draw_device = generator.device if generator is not None else device
    if noise is None:
        noise = torch.randn(shape, generator=generator, device=draw_device)  # (B, C, H, W) x_T ~ N(0, I)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, the samples {shape}")
    x = noise.to(device)
    if source is not None:
        x = source.start(x, schedule, solver.start_timestep())  # (B, C, H, W)
    repeats = source.resample_steps if source is not None else 1
    state: Any = None  # what the guidance carries from step to step (APG's momentum)
    for i, t in enumerate(_maybe_track(grid, progress)):
        t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)  # (B,)
        previous = grid[i + 1] if i + 1 < len(grid) else -1  # the step's new timestep (-1: the clean end)
        for repeat in range(repeats):
            again = repeat < repeats - 1  # RePaint: this step runs once more from x noised back up
            before = (solver.snapshot(), state) if again else None
            output, state = guidance.output(model, schedule, x, t, t_batch, state)  # (B, C, H, W)
            out = solver.step(output, t, x, generator=generator)
            stepped = out.prev_sample  # (B, C, H, W)
            if source is not None:
                stepped = source.blend(stepped, schedule, previous, generator)
            if again:
                x = source.renoise(stepped, schedule, t, previous, generator)
                solver.restore(before[0])
                state = before[1]
        x = stepped
        if t in record:
            trajectory[t] = out.pred_original_sample.clone()
    return (x, trajectory) if trajectory_at is not None else x


def _snap_to_grid(requested: Iterable[int], grid: list[int]) -> set[int]:
    """Map each requested timestep to the closest grid timestep (ties go to the noisier one)."""
    return {min(grid, key=lambda g: (abs(g - int(t)), -g)) for t in requested}


def _maybe_track(grid: list[int], progress: Progress) -> Iterable[int]:
    if callable(progress):
        return _reporting(grid, progress)
    if not progress:
        return grid
    from rich.progress import track

    return track(grid, description="sampling", total=len(grid))


def _reporting(grid: list[int], report: Callable[[int, int], None]) -> Iterator[int]:
    for done, t in enumerate(grid, start=1):
        yield t
        report(done, len(grid))


# ---------------------------------------------------------------------------------------------- configs


def _class_of(config: Mapping[str, Any], registry: Mapping[str, type]) -> type | None:
    """The class a stored config's ``_target_`` names, looked up among ``registry`` by class name (never imported)."""
    target = str(config.get("_target_", ""))
    return next((cls for cls in registry.values() if target.rsplit(".", 1)[-1] == cls.__name__), None)


#: the settings of the pre-0.3 ``sampler`` config that belong to the guidance, by their guidance names
_LEGACY_GUIDANCE_KEYS = {
    "guidance_scale": "scale",
    "guidance_interval": "interval",
    "autoguidance_scale": "autoguidance",
    "apg_eta": "eta",
    "apg_momentum": "momentum",
}
#: the defaults those configs had when a key was not written yet (0.1 wrote four keys)
_LEGACY_DEFAULTS = {"steps": 50, "eta": 0.0, "guidance_scale": 3.0, "guidance_method": "cfg"}


def is_legacy_sampler(config: Mapping[str, Any] | None) -> bool:
    """Whether ``config`` is a pre-0.3 ``sampler`` config (solver and guidance in one, with a ``kind``)."""
    return bool(config) and "kind" in config


def split_legacy_sampler(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pre-0.3 ``sampler`` config as ``(solver config, guidance config)`` with the same meaning.

    Settings a solver did not use were stored anyway (e.g. DPM-Solver++'s unused ``eta``); they are left
    out, as is a ``timestep_spacing`` of ``None`` (the solver's own grid).
    """
    settings = {**_LEGACY_DEFAULTS, **config}
    if settings["kind"] not in SOLVERS:
        raise ValueError(f"stored sampler kind={settings['kind']!r} is not one of {', '.join(SOLVERS)}")
    solver_cls = SOLVERS[settings["kind"]]
    if settings.get("timestep_spacing") is None:
        settings.pop("timestep_spacing", None)  # the solver's own grid, its default
    solver = {key: settings[key] for key in solver_cls().config if key in settings}
    guidance_cls = GUIDANCES[settings["guidance_method"]]
    renamed = {new: settings[old] for old, new in _LEGACY_GUIDANCE_KEYS.items() if old in settings}
    guidance = {key: renamed[key] for key in guidance_cls().config if key in renamed}
    return (
        {"_target_": f"{solver_cls.__module__}.{solver_cls.__qualname__}", **solver},
        {"_target_": f"{guidance_cls.__module__}.{guidance_cls.__qualname__}", **guidance},
    )


def sampling_record(sampler: Mapping[str, Any] | None, guidance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What results files (``metrics.json``, a sweep's CSV) record of how samples were drawn, from the configs.

    The same keys for every solver and guidance, so a sweep's CSV has the same columns: a setting a solver
    or guidance does not have is ``None``; intervals and ranges as text (``"[550, 999]"``), since a CSV
    keeps no lists. A pre-0.3 ``sampler`` config is read as the two it held; no configs at all (a samples
    file that names none) give ``None`` throughout.
    """
    if is_legacy_sampler(sampler):
        sampler, guidance = split_legacy_sampler(sampler)
    sampler, guidance = dict(sampler or {}), dict(guidance or {})
    solver_cls, guidance_cls = _class_of(sampler, SOLVERS), _class_of(guidance, GUIDANCES)
    solver_defaults = solver_cls().config if solver_cls else {}
    guidance_defaults = guidance_cls().config if guidance_cls else {}
    solver_settings, guidance_settings = {**solver_defaults, **sampler}, {**guidance_defaults, **guidance}

    def text(interval: Any) -> str | None:
        return None if interval is None else f"[{interval[0]:g}, {interval[1]:g}]"

    apg = guidance_cls is AdaptiveProjectedGuidance
    return {
        "sampler_kind": solver_cls.name if solver_cls else None,
        "sampler_steps": solver_settings.get("steps"),
        "timestep_spacing": solver_settings.get("timestep_spacing", "leading") if solver_cls else None,
        "logsnr_range": text(solver_settings.get("logsnr_range")),
        "noise_interval": text(solver_settings.get("noise_interval")),
        "guidance_method": guidance_cls.name if guidance_cls else None,
        "guidance_scale": guidance_settings.get("scale"),
        "guidance_interval": text(guidance_settings.get("interval")),
        "autoguidance_scale": guidance_settings.get("autoguidance"),
        "apg_eta": guidance_settings.get("eta") if apg else None,
        "apg_momentum": guidance_settings.get("momentum") if apg else None,
    }
