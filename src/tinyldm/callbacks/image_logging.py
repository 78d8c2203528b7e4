"""Send an image grid to whichever loggers the trainer has, and keep a PNG copy in the run dir.

Kept in one place so every stage logs pictures the same way and only rank zero writes files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from tinyldm.utils.images import save_png

log = logging.getLogger(__name__)


def log_image_grid(trainer: Trainer, key: str, grid: np.ndarray, png_dir: str | Path | None, caption: str = "") -> Path | None:
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

            logger.experiment.log({key: wandb.Histogram(np_histogram=(counts, edges)), "trainer/global_step": trainer.global_step})
        elif isinstance(logger, TensorBoardLogger):
            values = np.repeat(np.arange(len(counts)), counts.astype(np.int64))
            if len(values):
                logger.experiment.add_histogram(key, values, global_step=trainer.global_step)
