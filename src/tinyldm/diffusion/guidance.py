"""Guidance: classifier-free guidance (Ho & Salimans, 2021) and autoguidance (Karras et al., 2024).

A model trained with its conditioning randomly dropped (replaced by a "null" context)
can predict both ``cond = D(x_t, t, c)`` and ``uncond = D(x_t, t, null)``. Sampling with

    guided = uncond + s * (cond - uncond)

pushes samples towards what makes them *more* like class ``c`` than an average sample,
trading diversity for fidelity.

Scale convention (the diffusers / Imagen one; our ``s`` equals diffusers'
``guidance_scale``):

* ``s = 0``: purely unconditional;
* ``s = 1``: plain conditional sampling, no guidance;
* ``s > 1``: extrapolate away from the unconditional prediction (typical 2 - 7.5).

The original paper writes ``(1 + w) * cond - w * uncond``, i.e. ``s = w + 1``
(https://arxiv.org/abs/2207.12598).

Autoguidance ("Guiding a diffusion model with a bad version of itself", Karras et al. 2024,
https://arxiv.org/abs/2406.02507) extrapolates away from a *weaker* model of the same kind, the
guide ``B``, instead of (or on top of) the unconditional prediction:

    guided = uncond + s * (cond - uncond) + (w - 1) * (cond - B(x_t, t, c))

``w = 1`` is off. With ``s = 1`` this is the paper's ``B + w * (cond - B)``. The guide makes the
same kind of errors as the model, only larger, so the difference points away from them (from
malformed, low-density samples) without pulling every sample towards the class prototype as
raising ``s`` does. Our guide is the model's own EMA weights frozen early in its training
(``diffusion.guide_at``).

Adaptive projected guidance (APG; Sadat et al. 2024, "Eliminating oversaturation and artifacts of high
guidance scales in diffusion models", https://arxiv.org/abs/2410.02416) is the other rule for the
classifier-free term. It works on the denoised estimates ``x0``: the guidance update
``cond - uncond`` is split into its component parallel to ``x0_cond`` and the rest, and the parallel
part, which mostly rescales the image the sample already is (saturation, stroke weight), is scaled by
``eta`` (0: dropped). The orthogonal part is what changes the image towards its class. A negative
``momentum`` ``beta`` adds ``beta`` times the previous steps' update, so an update that keeps pointing
the same way is damped:

    d_k = (cond_k - uncond_k) + beta * d_{k-1}
    guided = cond + (s - 1) * (d_orthogonal + eta * d_parallel)

With ``eta = 1`` and ``beta = 0`` this is classifier-free guidance again.

The guidance *rules* (when guidance applies, that an unconditional model is never guided, that a
scale of 1 costs no unconditional pass, where autoguidance goes) live in the two guidance classes,
:class:`ClassifierFreeGuidance` and :class:`AdaptiveProjectedGuidance` (``conf/guidance/cfg.yaml``,
``apg.yaml``): each is its config, validated once when it is built, and composes with any solver.
:func:`paired_predictions`, :func:`classifier_free`, :func:`adaptive_projected` and
:func:`autoguided_prediction` are the bare arithmetic and trust their caller.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from tinyldm.diffusion.noise_schedule import NoiseSchedule
from tinyldm.diffusion.solver import validate_interval

#: ``denoiser(x_t (B, C, H, W), t (B,) long, context (B, L, D)) -> (B, C, H, W)``
Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]


def validate_guidance_scale(scale: Any, name: str = "guidance_scale", minimum: float = 0.0) -> float:
    """Return ``scale`` as a float, or raise ``ValueError`` naming ``name`` if it is not a finite number >= ``minimum``.

    Negative scales would steer *away* from the condition and ``nan``/``inf`` would
    silently turn every sample into ``nan``, so both are rejected early (when a sampler is
    built from its config) rather than after a long sampling run.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"{name} must be a number in [{minimum:g}, inf), got {scale!r}")
    if not math.isfinite(scale) or scale < minimum:
        raise ValueError(f"{name} must be a finite number in [{minimum:g}, inf), got {scale!r}")
    return float(scale)


def validate_autoguidance_scale(scale: Any) -> float:
    """``w`` as a float: a finite number >= 1 (``1`` = off; below 1 would steer *towards* the weaker guide)."""
    return validate_guidance_scale(scale, "autoguidance_scale", minimum=1.0)


def paired_predictions(
    denoiser: Denoiser,
    x_t: Tensor,
    t: Tensor,
    cond_context: Tensor,
    uncond_context: Tensor,
    cond_mask: Tensor | None = None,
    uncond_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The conditional and unconditional denoiser outputs ``(B, C, H, W)`` each, from ONE batched forward pass.

    Conditional and unconditional halves are stacked into a batch of ``2B`` so the
    network runs once per step (twice the batch is much cheaper than two launches,
    and keeps any batch-dependent layers seeing both halves together).

    Args:
        denoiser: ``denoiser(x_t, t, context) -> prediction`` (noise, velocity or x0;
            guidance is linear, so it applies to any of them).
        x_t: noisy sample ``(B, C, H, W)``.
        t: timesteps ``(B,)`` long.
        cond_context: conditioning ``(B, L, D)``.
        uncond_context: null conditioning ``(B, L, D)``; a single ``(1, L, D)`` null
            context is broadcast to the batch.
        cond_mask, uncond_mask: ``(B, L)`` bool key-padding masks (False = padding; a ``(1, L)``
            null mask is broadcast), or ``None`` for all-real tokens. When either is given the
            denoiser is called with the stacked mask as a fourth argument.
    """
    batch = x_t.shape[0]
    if uncond_context.shape[0] == 1 and batch != 1:
        uncond_context = uncond_context.expand(batch, *uncond_context.shape[1:])  # (1, L, D) -> (B, L, D)
    if cond_context.shape != uncond_context.shape:
        raise ValueError(
            "cond_context and uncond_context must have the same shape (B, L, D); "
            f"got {tuple(cond_context.shape)} and {tuple(uncond_context.shape)}"
        )
    if cond_context.shape[0] != batch or t.shape != (batch,):
        raise ValueError(
            f"batch mismatch: x_t has B={batch}, t has shape {tuple(t.shape)}, "
            f"context has shape {tuple(cond_context.shape)}"
        )

    x_in = torch.cat([x_t, x_t])  # (2B, C, H, W)
    t_in = torch.cat([t, t])  # (2B,)
    context_in = torch.cat([cond_context, uncond_context])  # (2B, L, D)
    if cond_mask is None and uncond_mask is None:
        prediction = denoiser(x_in, t_in, context_in)  # (2B, C, H, W)
    else:
        all_real = torch.ones(cond_context.shape[:2], dtype=torch.bool, device=cond_context.device)  # (B, L)
        cond_mask = all_real if cond_mask is None else cond_mask
        uncond_mask = all_real if uncond_mask is None else uncond_mask.expand(batch, -1)  # (1, L) -> (B, L)
        prediction = denoiser(x_in, t_in, context_in, torch.cat([cond_mask, uncond_mask]))  # (2B, C, H, W)
    pred_cond, pred_uncond = prediction.chunk(2)  # 2 x (B, C, H, W)
    return pred_cond, pred_uncond


def classifier_free(pred_cond: Tensor, pred_uncond: Tensor, guidance_scale: float) -> Tensor:
    """``uncond + s * (cond - uncond)``, all ``(B, C, H, W)``; ``s`` validated by the caller."""
    return pred_uncond + guidance_scale * (pred_cond - pred_uncond)  # (B, C, H, W)


def adaptive_projected(
    x0_cond: Tensor, x0_uncond: Tensor, guidance_scale: float, eta: float, momentum: float, previous: Tensor | None
) -> tuple[Tensor, Tensor]:
    """APG on denoised estimates: ``(guided x0, this step's update d_k)``, all ``(B, C, H, W)``.

    ``previous`` is the last guided step's ``d_{k-1}`` (``None`` at the first). The projection is per
    sample, in float64 as in the paper's code: the parallel part of a nearly parallel update is the
    difference of two close numbers. ``guidance_scale``, ``eta`` and ``momentum`` were validated by
    the caller.
    """
    update = x0_cond - x0_uncond  # (B, C, H, W)
    if previous is not None and momentum != 0.0:
        update = update + momentum * previous
    flat, direction = update.double().flatten(1), x0_cond.double().flatten(1)  # (B, C*H*W) each
    unit = torch.nn.functional.normalize(direction, dim=1)
    parallel = (flat * unit).sum(dim=1, keepdim=True) * unit  # (B, C*H*W)
    projected = (flat - (1.0 - eta) * parallel).view_as(update).to(update.dtype)  # (B, C, H, W)
    return x0_cond + (guidance_scale - 1.0) * projected, update


def autoguided_prediction(
    prediction: Tensor, pred_cond: Tensor, pred_guide: Tensor, autoguidance_scale: float
) -> Tensor:
    """Autoguidance on top of a step's output: ``prediction + (w - 1) * (pred_cond - pred_guide)``, each (B, C, H, W).

    ``prediction`` is the step's (classifier-free guided or plain conditional) output, ``pred_cond``
    the model's conditional output and ``pred_guide`` the guide's on the same ``(x_t, t, context)``;
    ``w = autoguidance_scale`` (``1`` = off), validated by the caller.
    """
    return prediction + (autoguidance_scale - 1.0) * (pred_cond - pred_guide)  # (B, C, H, W)


class Predictions(Protocol):
    """The network calls a guidance rule may make at one step.

    :class:`~tinyldm.diffusion.sampling.ConditionedDenoiser` is the one implementation.
    """

    @property
    def unconditional(self) -> bool:
        """True for a model without conditions: there is no null context to guide away from."""

    def conditional(self, x: Tensor, t: Tensor) -> Tensor:
        """The model's conditional output ``(B, C, H, W)``."""

    def paired(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Conditional and unconditional outputs from one batched forward, ``(B, C, H, W)`` each."""

    def guide(self, x: Tensor, t: Tensor) -> Tensor:
        """The autoguidance guide's conditional output ``(B, C, H, W)``."""


@dataclasses.dataclass(frozen=True)
class ClassifierFreeGuidance:
    """Classifier-free guidance (Ho & Salimans 2021), optionally in a timestep interval, plus autoguidance.

    Immutable, and validated on construction (also by :meth:`replace`), so guidance that exists is
    valid; one object serves any number of sampling runs with any solver.

    Args:
        scale: ``s`` in ``uncond + s * (cond - uncond)`` (``1`` = plain conditional, ``0`` =
            unconditional, ``> 1`` = stronger; diffusers' ``guidance_scale``). Ignored for unconditional models.
        interval: ``[t_low, t_high]`` training timesteps (inclusive) where the classifier-free term applies;
            elsewhere the step uses the conditional output alone (one forward of ``B``, not ``2B``). ``None``
            guides every step. Kynkäänniemi et al. 2024 (https://arxiv.org/abs/2404.07724): at high noise,
            strong guidance pulls every sample of a class towards one layout; at low noise it only sharpens
            details the condition no longer decides.
        autoguidance: ``w`` of autoguidance (Karras et al. 2024, https://arxiv.org/abs/2406.02507): each step
            adds ``(w - 1) * (cond - guide(x_t, t, c))``, inside the interval or not. ``1`` is off; above 1
            the model needs its guide (a stage-2 model trained with ``diffusion.guide_at`` keeps one).
    """

    #: the guidance's name in results files and in ``conf/guidance/``
    name: ClassVar[str] = "cfg"

    scale: float = 2.0
    interval: tuple[int, int] | None = None
    autoguidance: float = 1.0

    def __post_init__(self) -> None:
        checked = {
            "scale": validate_guidance_scale(self.scale, "scale"),
            "interval": validate_interval("interval", self.interval, "[100, 600]"),
            "autoguidance": validate_guidance_scale(self.autoguidance, "autoguidance", minimum=1.0),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)  # frozen: store the validated, normalised values

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this guidance (tuples as lists, as a config holds them)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def as_config(self) -> dict[str, Any]:
        """:attr:`config` with its ``_target_``: what checkpoints and results files record."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", **self.config}

    def replace(self, **changes: Any) -> ClassifierFreeGuidance:
        """This guidance with ``changes`` (validated; ``TypeError`` naming a setting it does not take)."""
        unknown = sorted(set(changes) - set(self.config))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} ({self.name}) has no setting {', '.join(unknown)}; "
                f"its settings: {', '.join(self.config)}"
            )
        return dataclasses.replace(self, **changes)

    @property
    def uses_guide(self) -> bool:
        """Whether sampling needs the model's autoguidance guide."""
        return self.autoguidance != 1.0

    def applies_at(self, t: int) -> bool:
        """Whether the classifier-free term applies at timestep ``t`` (always without an interval)."""
        return self.interval is None or self.interval[0] <= t <= self.interval[1]

    def output(
        self, model: Predictions, schedule: NoiseSchedule, x: Tensor, t: int, t_batch: Tensor, state: Any = None
    ) -> tuple[Tensor, Any]:
        """The network output ``(B, C, H, W)`` one solver step takes at ``(x, t)``, and the state for the next step.

        With ``scale == 1`` (or an unconditional model, or ``t`` outside the interval) the unconditional pass is
        skipped: the network runs on the conditional batch only, and the result is exactly the conditional
        output rather than ``uncond + 1 * (cond - uncond)`` up to round-off.
        """
        if not model.unconditional and self.scale != 1.0 and self.applies_at(t):
            pred_cond, pred_uncond = model.paired(x, t_batch)  # 2 x (B, C, H, W)
            output, state = self.combine(schedule, t, x, pred_cond, pred_uncond, state)
        else:
            pred_cond = output = model.conditional(x, t_batch)  # (B, C, H, W)
        if self.uses_guide:
            output = autoguided_prediction(output, pred_cond, model.guide(x, t_batch), self.autoguidance)
        return output, state

    def combine(
        self, schedule: NoiseSchedule, t: int, x: Tensor, pred_cond: Tensor, pred_uncond: Tensor, state: Any
    ) -> tuple[Tensor, Any]:
        """The guided output from the two predictions (``(B, C, H, W)`` each); CFG keeps no state."""
        return classifier_free(pred_cond, pred_uncond, self.scale), state


@dataclasses.dataclass(frozen=True)
class AdaptiveProjectedGuidance(ClassifierFreeGuidance):
    """Adaptive projected guidance (Sadat et al. 2024, https://arxiv.org/abs/2410.02416), plus autoguidance.

    The same two network calls per step as classifier-free guidance, combined on their ``x0`` estimates
    (:func:`adaptive_projected`): the part of the update parallel to the conditional estimate is scaled
    by ``eta`` and ``momentum`` times the previous guided step's update is added. ``eta = 1`` and
    ``momentum = 0`` are classifier-free guidance again.

    Args:
        scale: ``s``, as :class:`ClassifierFreeGuidance`'s; APG needs a higher one for the same push.
        interval: ``[t_low, t_high]`` training timesteps where the guidance term applies; ``None``: every step.
        autoguidance: ``w`` of autoguidance (``1`` = off).
        eta: weight of the update's part parallel to the conditional ``x0``, in ``[0, 1]`` (0: dropped).
        momentum: ``beta`` in ``(-1, 1)``; negative damps an update that keeps its direction.
    """

    name: ClassVar[str] = "apg"

    eta: float = 0.0
    momentum: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()

        def finite(value: Any) -> bool:
            return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

        if not (finite(self.eta) and 0.0 <= self.eta <= 1.0):
            raise ValueError(f"eta must be a number in [0, 1], got {self.eta!r}")
        if not (finite(self.momentum) and -1.0 < self.momentum < 1.0):
            raise ValueError(f"momentum must be a number in (-1, 1), got {self.momentum!r}")
        object.__setattr__(self, "eta", float(self.eta))
        object.__setattr__(self, "momentum", float(self.momentum))

    def combine(
        self, schedule: NoiseSchedule, t: int, x: Tensor, pred_cond: Tensor, pred_uncond: Tensor, state: Any
    ) -> tuple[Tensor, Any]:
        """APG of one step: the network output for the solver, and the update to carry (the state), ``(B, C, H, W)``.

        APG is defined on denoised estimates, so both predictions go to ``x0`` and the guided estimate
        comes back as the network output that :meth:`NoiseSchedule.predict_x0` maps to it. In float32
        whatever the autocast dtype, as the solvers' own conversions are.
        """
        alpha_bar_t = schedule.alpha_bars(t, t, x.device)[0]
        x = x.float()
        x0_cond = schedule.predict_x0(pred_cond.float(), x, alpha_bar_t)  # (B, C, H, W)
        x0_uncond = schedule.predict_x0(pred_uncond.float(), x, alpha_bar_t)  # (B, C, H, W)
        x0, update = adaptive_projected(x0_cond, x0_uncond, self.scale, self.eta, self.momentum, state)
        return schedule.output_from_x0(x0, x, alpha_bar_t), update
