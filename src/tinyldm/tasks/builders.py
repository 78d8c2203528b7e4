"""Build Lightning objects (trainer, loggers, callbacks) for one stage from the composed config."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
from tinyldm.utils.instantiate import build
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from tinyldm.callbacks.progress import BudgetLog
from tinyldm.utils.checkpoints import SafeCheckpointIO

log = logging.getLogger(__name__)


class RunLoggers:
    """Loggers for a run with several stages.

    File loggers (CSV, TensorBoard) get one sub-folder per stage so stage 2 does not overwrite
    stage 1's files; a W&B run is created once and shared, so both stages land on one dashboard
    (metric names carry the stage: ``ae/...``, ``ldm/...``). A resumed run passes the W&B run id
    stored in its checkpoint, so it continues that W&B run rather than starting a new one.
    """

    def __init__(self, logger_cfg: DictConfig | None, run_config: dict[str, Any] | None = None,
                 wandb_run_id: str | None = None) -> None:
        self.cfg = logger_cfg or {}
        self.run_config = run_config or {}
        self.wandb_run_id = wandb_run_id
        self._shared: dict[str, Logger] = {}

    def for_stage(self, stage: str) -> list[Logger]:
        loggers: list[Logger] = []
        for key, spec in self.cfg.items():
            if not isinstance(spec, DictConfig) or "_target_" not in spec:
                continue
            if key in self._shared:
                loggers.append(self._shared[key])
                continue
            target = str(spec._target_)
            if target.endswith(("CSVLogger", "TensorBoardLogger")):
                logger = build(spec, version=free_version(Path(spec.save_dir) / str(spec.get("name", "")), stage))
            elif target.endswith(("wandb_logger", "WandbLogger")) and self.wandb_run_id:
                logger = self._shared[key] = build(spec, id=self.wandb_run_id, resume="allow")
            else:
                logger = self._shared[key] = build(spec)
            if self.run_config:  # the whole resolved config becomes the run's config (W&B: run config)
                logger.log_hyperparams(self.run_config)
            loggers.append(logger)
        return loggers

    def finish(self, status: str = "success") -> None:
        """Close shared loggers; a crashed job marks its own run failed and leaves the others alone."""
        for logger in self._shared.values():
            logger.finalize(status)
            experiment = getattr(logger, "_experiment", None)
            if experiment is not None and hasattr(experiment, "finish"):
                experiment.finish(exit_code=0 if status == "success" else 1)


def free_version(logger_dir: Path, stage: str) -> str:
    """``stage``, or ``stage-resumed-N`` when a resumed run finds that stage's logs already there.

    Lightning's CSVLogger deletes an existing ``metrics.csv`` in its version folder, which would
    throw away the history of the run being resumed.
    """
    version, n = stage, 0
    while (logger_dir / version).exists() and any((logger_dir / version).iterdir()):
        n += 1
        version = f"{stage}-resumed-{n}"
    return version


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


def log_batch_sizes(trainer: L.Trainer, prefix: str, per_device: int, num_parameters: int) -> None:
    """Record per-device and effective (x world size) batch size and the trained parameter count."""
    values = {f"{prefix}/batch_size_per_device": per_device, f"{prefix}/effective_batch_size": per_device * trainer.world_size,
              f"{prefix}/world_size": trainer.world_size, f"{prefix}/num_parameters": num_parameters}
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
    return {"max_steps": steps, "max_epochs": -1, "val_check_interval": max(steps // validations, 1),
            "check_val_every_n_epoch": None}


def build_trainer(cfg: DictConfig, stage: str, run_dir: Path, loggers: RunLoggers, **overrides: Any) -> L.Trainer:
    """A Trainer for ``stage`` with its own checkpoint folder and the stage's length overrides.

    Its checkpoint I/O is :class:`SafeCheckpointIO`: weights-only, allow-list-checked reads (resume)
    and atomic writes.
    """
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_kwargs.update(overrides)
    plugins = trainer_kwargs.pop("plugins", None) or []
    plugins = [build(p) if isinstance(p, dict) else p for p in (plugins if isinstance(plugins, list) else [plugins])]
    stage_loggers = loggers.for_stage(stage)
    callbacks = [*build_callbacks(cfg.get("callbacks"), run_dir / "checkpoints" / stage, bool(stage_loggers)), BudgetLog(stage)]
    return build(
        trainer_kwargs,
        logger=stage_loggers if stage_loggers else False,
        callbacks=callbacks,
        plugins=[*plugins, SafeCheckpointIO()],
        default_root_dir=str(run_dir),
        _convert_="partial",
    )
