"""Progress of a stage in optimizer steps: one bar over the whole budget, a start line and an ETA.

Stages are budgeted in optimizer steps (``max_steps``), so the bar counts steps out of the stage's
total rather than batches of the current epoch, and the log says up front how long the stage is
(and, once the speed is known, when it will end).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

log = logging.getLogger(__name__)


def total_steps(trainer: L.Trainer) -> int | None:
    """The stage's optimizer-step budget (from ``max_steps``, or estimated from ``max_epochs``)."""
    if trainer.max_steps and trainer.max_steps > 0:
        return int(trainer.max_steps)
    estimate = trainer.estimated_stepping_batches
    return int(estimate) if estimate != float("inf") else None


class StepProgressBar(TQDMProgressBar):
    """tqdm bar over the stage's optimizer steps (the epoch is shown in the description)."""

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        bar.total = convert_inf(total_steps(trainer))
        bar.set_description(f"Epoch {trainer.current_epoch}")
        self._show(trainer.global_step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self._should_update(step, self.train_progress_bar.total):
            self._show(step)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def _show(self, step: int) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.n = step
            self.train_progress_bar.refresh()


def progress_bar(refresh_rate: int = 1) -> StepProgressBar:
    """Refresh at most every ``refresh_rate`` steps (at least every 10 when not on a terminal, for log files)."""
    import sys

    return StepProgressBar(refresh_rate=refresh_rate if sys.stdout.isatty() else max(refresh_rate, 10))


class BudgetLog(Callback):
    """Log the stage's length at the start and, after ``eta_after_steps`` steps, its speed and ETA."""

    def __init__(self, stage: str, eta_after_steps: int = 200) -> None:
        self.stage = stage
        self.eta_after_steps = eta_after_steps
        self._start: tuple[float, int] | None = None
        self._reported = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps = total_steps(trainer)
        batches = trainer.num_training_batches
        epochs = f"{steps / batches:.1f} epochs of {batches} batches" if steps and batches else "unknown epochs"
        if trainer.is_global_zero:
            log.info(
                "Stage %s: %s optimizer steps (%s; from step %d)",
                self.stage,
                steps if steps else "?",
                epochs,
                trainer.global_step,
            )
        self._start = (time.perf_counter(), trainer.global_step)
        self._reported = False

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        if self._reported or self._start is None or not trainer.is_global_zero:
            return
        started, first_step = self._start
        done = trainer.global_step - first_step
        steps = total_steps(trainer)
        if done < self.eta_after_steps or not steps:
            return
        rate = done / (time.perf_counter() - started)
        remaining = max(steps - trainer.global_step, 0) / rate
        log.info(
            "Stage %s: step %d/%d at %.2f steps/s, about %d min %02d s left",
            self.stage,
            trainer.global_step,
            steps,
            rate,
            remaining // 60,
            remaining % 60,
        )
        self._reported = True
