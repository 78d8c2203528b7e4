"""Build the Lightning objects (trainer, callbacks) for one stage, and read back what the stage measured."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from tinyldm.callbacks.progress import BudgetLog
from tinyldm.utils.checkpoints import SafeCheckpointIO
from tinyldm.utils.instantiate import build
from tinyldm.utils.loggers import RunLoggers

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    """What a finished stage leaves: its checkpoint and its figures (``ae/...`` or ``ldm/...``)."""

    checkpoint: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def stage_metrics(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    """The trainer's last logged values whose names start with ``prefix`` (e.g. ``ae/val/``)."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def build_callbacks(callbacks_cfg: DictConfig | None, checkpoint_dir: Path, has_logger: bool = True) -> list[Callback]:
    """Instantiate the configured callbacks; checkpoints go to ``checkpoint_dir``.

    ``LearningRateMonitor`` refuses to run without a logger, so it is dropped for ``logger=none``.
    """
    callbacks: list[Callback] = []
    for spec in (callbacks_cfg or {}).values():
        if not isinstance(spec, DictConfig) or "_target_" not in spec:
            continue
        callback = build(spec)
        if isinstance(callback, LearningRateMonitor) and not has_logger:
            continue
        if isinstance(callback, ModelCheckpoint):
            callback.dirpath = str(checkpoint_dir)
        callbacks.append(callback)
    return callbacks


#: ``save_checkpoint``'s ``weights_only`` for stage files: they keep the training state a resume needs
WRITE_TRAINING_STATE = False


def save_stage_checkpoint(trainer: L.Trainer, path: Path) -> Path:
    """Write the stage's checkpoint with the full training state (optimizer, loops, callbacks), so it resumes.

    Lightning's ``save_checkpoint`` asks ``weights_only`` of the *file it writes* (weights alone, or the
    training state too), not of a load; left unset it logs that it defaults to the full state, which
    reads like an unsafe load. So the choice is made here, by name. Every read stays weights-only
    (:func:`tinyldm.utils.checkpoints.read_checkpoint`).
    """
    trainer.save_checkpoint(path, weights_only=WRITE_TRAINING_STATE)
    return path


def log_batch_sizes(trainer: L.Trainer, prefix: str, per_device: int, num_parameters: int) -> None:
    """Record per-device and effective (x world size) batch size and the trained parameter count."""
    values = {
        f"{prefix}/batch_size_per_device": per_device,
        f"{prefix}/effective_batch_size": per_device * trainer.world_size,
        f"{prefix}/world_size": trainer.world_size,
        f"{prefix}/num_parameters": num_parameters,
    }
    for logger in trainer.loggers:
        logger.log_hyperparams(values)


def stage_length(section: DictConfig) -> dict[str, Any]:
    """Trainer arguments for one stage's budget (``model.training`` or ``diffusion``).

    In optimizer steps (``max_steps``) the stage costs the same on 5k or 60k images; it validates
    ``ceil(max_steps / val_every_n_steps)`` times, evenly spaced, the last within a few steps of the
    end. In epochs (``max_epochs``) it validates once per epoch, as Lightning does by default.
    """
    steps = section.get("max_steps")
    if steps is None:
        return {"max_epochs": int(section.max_epochs), "max_steps": -1}
    steps = int(steps)
    validations = math.ceil(steps / int(section.get("val_every_n_steps") or steps))
    return {
        "max_steps": steps,
        "max_epochs": -1,
        "val_check_interval": max(steps // validations, 1),
        "check_val_every_n_epoch": None,
    }


def build_trainer(
    cfg: DictConfig,
    stage: str,
    run_dir: Path,
    loggers: RunLoggers,
    extra_callbacks: Sequence[Callback] = (),
    **overrides: Any,
) -> L.Trainer:
    """A Trainer for ``stage`` with its own checkpoint folder, the stage's own callbacks and length overrides.

    Its checkpoint I/O is :class:`SafeCheckpointIO`: weights-only, allow-list-checked reads (resume)
    and atomic writes.
    """
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_kwargs.update(overrides)
    plugins = trainer_kwargs.pop("plugins", None) or []
    plugins = [build(p) if isinstance(p, dict) else p for p in (plugins if isinstance(plugins, list) else [plugins])]
    stage_loggers = loggers.for_stage(stage)
    callbacks = [
        *build_callbacks(cfg.get("callbacks"), run_dir / "checkpoints" / stage, bool(stage_loggers)),
        BudgetLog(stage),
        *extra_callbacks,
    ]
    return build(
        trainer_kwargs,
        logger=stage_loggers if stage_loggers else False,
        callbacks=callbacks,
        plugins=[*plugins, SafeCheckpointIO()],
        default_root_dir=str(run_dir),
        _convert_="partial",
    )
