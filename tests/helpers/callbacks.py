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


class PoisonWeights(L.Callback):
    """Simulate a diverged run: at the start of epoch ``epoch`` set one trainable weight to NaN.

    Only modules whose class name is ``module`` are touched, so a two-stage run can poison one stage.
    """

    def __init__(self, epoch: int = 1, module: str = "AutoencoderModule") -> None:
        self.epoch, self.module = epoch, module

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if type(pl_module).__name__ == self.module and trainer.current_epoch == self.epoch:
            trained_weight = trainer.optimizers[0].param_groups[0]["params"][0]
            trained_weight.data.fill_(float("nan"))
