"""Callbacks that only tests use (referenced from configs with `+callbacks.NAME._target_=...`)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

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


class KillSelf(L.Callback):
    """Simulate a hard kill (SIGKILL: no cleanup, no finally blocks) at the start of epoch ``epoch``.

    Only modules whose class name is ``module`` are touched, so a two-stage run can be killed in either stage.
    """

    def __init__(self, epoch: int = 1, module: str = "AutoencoderModule") -> None:
        self.epoch, self.module = epoch, module

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if type(pl_module).__name__ == self.module and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class RecordSampleOrder(L.Callback):
    """Write, per rank and epoch, the indices the stage-2 training sampler hands this rank (to ``folder``)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if type(pl_module).__name__ != "LatentDiffusionModule":
            return
        indices = list(iter(trainer.train_dataloader.sampler))
        path = Path(self.folder) / f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(indices))


class RecordTrainLosses(L.Callback):
    """Write, per stage and rank, the last epoch's step losses and the epoch means the module logged (to ``folder``)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.losses: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.losses = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("train/loss_epoch")}
        path = Path(self.folder) / f"{type(pl_module).__name__}-rank{trainer.global_rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"losses": self.losses, "logged": logged}))
