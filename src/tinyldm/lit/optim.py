"""Optimizer / LR-scheduler construction from (partial) Hydra configs stored in hparams.

Both stages keep their optimiser settings as plain config dicts so a checkpoint can be resumed
without Hydra, and build them here the same way.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from tinyldm.utils.instantiate import build

log = logging.getLogger(__name__)


def build_optimizers(
    params: Iterable[torch.nn.Parameter],
    optimizer: Mapping[str, Any],
    lr_scheduler: Mapping[str, Any] | None,
    total_steps: int | None = None,
    allow_fused: bool = True,
) -> dict[str, Any]:
    """Return the dict Lightning's ``configure_optimizers`` expects.

    ``lr_scheduler`` is ``{"scheduler": <partial config>, "interval": "step"|"epoch", ...}``.
    Schedulers that take a ``total_steps`` argument (OneCycleLR) get the trainer's estimate unless
    the config sets it, so the schedule follows ``max_epochs`` without a second number to keep in sync.

    ``allow_fused=False`` drops a configured ``fused: true``: a fused optimizer unscales its own
    gradients, which Lightning cannot combine with gradient clipping under mixed precision, and
    the fused kernel is a speed setting, not a different optimizer.
    """
    optimizer = dict(optimizer)
    if optimizer.get("fused") and not allow_fused:
        log.info("optimizer.fused=true ignored: gradient clipping under mixed precision needs the unfused optimizer")
        optimizer["fused"] = None
    opt = build(optimizer)(params=params)
    if not lr_scheduler:
        return {"optimizer": opt}
    spec = dict(lr_scheduler)
    factory = build(dict(spec.pop("scheduler")))
    extra: dict[str, Any] = {}
    target = getattr(factory, "func", factory)
    keywords = getattr(factory, "keywords", {})
    if total_steps and "total_steps" in inspect.signature(target).parameters and "total_steps" not in keywords:
        extra["total_steps"] = max(int(total_steps), 1)
    steps = extra.get("total_steps", keywords.get("total_steps"))
    if target is torch.optim.lr_scheduler.OneCycleLR and steps:
        pct_start = float(keywords.get("pct_start", 0.3))
        extra["pct_start"] = one_cycle_pct_start(pct_start, int(steps))
        if extra["pct_start"] != pct_start:
            log.info("one-cycle schedule of %d steps: pct_start %.3g -> %.3g", steps, pct_start, extra["pct_start"])
    scheduler = factory(optimizer=opt, **extra)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, **spec}}


def fused_allowed(trainer: Any) -> bool:
    """Whether ``trainer`` can step a fused optimizer: not when it clips gradients under mixed precision."""
    return trainer is None or not (trainer.gradient_clip_val and "mixed" in str(trainer.precision))


def one_cycle_pct_start(pct_start: float, total_steps: int) -> float:
    """A ``pct_start`` that ``OneCycleLR`` can use for ``total_steps``.

    OneCycleLR divides by ``pct_start * total_steps - 1``, which is zero for e.g. 20 steps at
    0.05 or 5 steps at 0.2. Budgets that short (but of at least 3 steps) warm up for 2 steps instead.
    """
    if total_steps >= 3 and pct_start * total_steps < 2:
        return 2 / total_steps
    return pct_start
