"""Loggers: building them for a run with several stages, without blocking, and sending them pictures.

``wandb.init`` raises without an API key and, with a key but no network, can hang for minutes.
``mode=auto`` therefore goes online only when W&B is visibly set up, and offline otherwise; the
offline run can be uploaded later with ``wandb sync``.

Image grids and histograms go to whichever loggers the trainer has through one function each, so
every stage logs pictures the same way and only rank zero writes files.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig

from tinyldm.utils.images import save_png
from tinyldm.utils.instantiate import build

log = logging.getLogger(__name__)
WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_is_configured() -> bool:
    """True when an API key is available through the environment or ``wandb login`` (~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(netrc_path).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.wandb.mode={mode!r} is not one of {list(WANDB_MODES)}")
    env_mode = os.environ.get("WANDB_MODE")
    if mode == "auto" and env_mode in WANDB_MODES[1:]:
        return env_mode
    if mode == "auto":
        return "online" if wandb_is_configured() else "offline"
    return mode


def _sweep_name() -> str | None:
    """Name of the Hydra sweep this job belongs to (None outside a multirun)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        config = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    return Path(config.sweep.dir).name if config.mode == RunMode.MULTIRUN else None


def wandb_logger(mode: str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbLogger:
    """Build a :class:`WandbLogger` whose mode never triggers a login prompt."""
    resolved = resolve_wandb_mode(mode)
    if resolved == "offline":
        log.info(
            "W&B is not set up (no WANDB_API_KEY / wandb login): logging offline to %s/wandb; "
            "upload later with `wandb sync %s/wandb/offline-run-*`",
            save_dir,
            save_dir,
        )
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "group" not in kwargs and (sweep := _sweep_name()) is not None:
        kwargs["group"] = sweep  # every job of a multirun lands in one W&B group
    if "tags" in kwargs:
        kwargs["tags"] = list(kwargs["tags"])
    return WandbLogger(save_dir=save_dir, mode=resolved, **kwargs)


class RunLoggers:
    """Loggers for a run with several stages.

    File loggers (CSV, TensorBoard) get one sub-folder per stage so stage 2 does not overwrite
    stage 1's files; a W&B run is created once and shared, so both stages land on one dashboard
    (metric names carry the stage: ``ae/...``, ``ldm/...``). A resumed run passes the W&B run id
    stored in its checkpoint, so it continues that W&B run rather than starting a new one.
    """

    def __init__(
        self, logger_cfg: DictConfig | None, run_config: dict[str, Any] | None = None, wandb_run_id: str | None = None
    ) -> None:
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


def log_image_grid(
    trainer: Trainer, key: str, grid: np.ndarray, png_dir: str | Path | None, caption: str = ""
) -> Path | None:
    """Log ``grid`` ((H, W, 3) uint8) under ``key`` and save ``png_dir/<key>_epoch<E>.png``."""
    if not trainer.is_global_zero:
        return None
    path = None
    if png_dir is not None:
        name = key.replace("/", "_") + f"_epoch{trainer.current_epoch:03d}.png"
        path = save_png(grid, Path(png_dir) / name)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            extra = {"caption": [caption]} if caption else {}
            logger.log_image(key=key, images=[grid], step=trainer.global_step, **extra)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=trainer.global_step, dataformats="HWC")
    return path


def log_histogram(trainer: Trainer, key: str, counts: np.ndarray) -> None:
    """Log a per-bin count vector (e.g. VQ code usage) as a histogram on W&B / TensorBoard."""
    if not trainer.is_global_zero:
        return
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.arange(len(counts) + 1, dtype=np.float64)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log(
                {key: wandb.Histogram(np_histogram=(counts, edges)), "trainer/global_step": trainer.global_step}
            )
        elif isinstance(logger, TensorBoardLogger):
            values = np.repeat(np.arange(len(counts)), counts.astype(np.int64))
            if len(values):
                logger.experiment.add_histogram(key, values, global_step=trainer.global_step)
