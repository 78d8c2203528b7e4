"""Callbacks that only tests use (referenced from configs with `+callbacks.NAME._target_=...`)."""

from __future__ import annotations

import lightning as L


class StopAfterEpochs(L.Callback):
    """Simulate an interrupted run: ask the trainer to stop after ``epochs`` epochs."""

    def __init__(self, epochs: int = 1) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True
