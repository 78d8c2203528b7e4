"""Stage 1: train an autoencoder to reconstruct images, then record its latent scale factor.

The module is built from plain config dicts (``autoencoder``, ``optimizer``, ...) that it stores as
hyperparameters, so ``AutoencoderModule.load_from_checkpoint(path)`` rebuilds the exact model
with no Hydra run around it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from tinyldm.autoencoders.base import Autoencoder
from tinyldm.lit.optim import build_optimizers, fused_allowed
from tinyldm.lit.upgrades import upgrade_stage1
from tinyldm.utils.checkpoints import stamp
from tinyldm.utils.images import crop, grid_uint8, to_unit
from tinyldm.utils.instantiate import build
from tinyldm.utils.loggers import log_histogram, log_image_grid

STAGE = "autoencoder"
_RECONSTRUCTION_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


log = logging.getLogger(__name__)


class AutoencoderModule(L.LightningModule):
    def __init__(
        self,
        autoencoder: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        lr_scheduler: Mapping[str, Any] | None = None,
        reconstruction_loss: str = "mse",
        metric_crop: int = 2,
        num_grid_images: int = 32,
        image_dir: str | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if reconstruction_loss not in _RECONSTRUCTION_LOSSES:
            raise ValueError(
                f"reconstruction_loss={reconstruction_loss!r} is not one of {sorted(_RECONSTRUCTION_LOSSES)}"
            )
        self.save_hyperparameters(ignore=["image_dir"])
        self.autoencoder: Autoencoder = build(dict(autoencoder))
        # NHWC weights and activations while training: oneDNN's small convolutions run faster in that
        # layout (docs/experiments/stage1.md). Only the layout changes, not the function computed.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.autoencoder.to(memory_format=self.memory_format)
        self.reconstruction_loss = _RECONSTRUCTION_LOSSES[reconstruction_loss]
        self.image_dir = image_dir
        # metrics on the original 28x28 content, on the [0, 1] scale
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        # the epoch's mean training losses over every rank (torchmetrics syncs them once, at epoch end);
        # the per-step values stay each rank's own, so DDP adds no collective to a training step
        self.train_loss, self.train_rec_loss = MeanMetric(), MeanMetric()
        self._code_counts: torch.Tensor | None = None
        self._grid_batch: torch.Tensor | None = None

    @classmethod
    def upgrade_hyperparameters(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """A checkpoint's hyper-parameters as this release's constructor takes them (:mod:`tinyldm.lit.upgrades`)."""
        return upgrade_stage1(hparams)

    # ------------------------------------------------------------------ training
    def _step(self, images: torch.Tensor, split: str) -> tuple[torch.Tensor, Any]:
        out = self.autoencoder(images.contiguous(memory_format=self.memory_format))  # (B, 1, H, W)
        reconstruction = self.reconstruction_loss(out.reconstruction.float(), images.float())
        loss = reconstruction + sum(out.losses.values(), torch.zeros((), device=images.device))
        if split == "train":
            self.train_loss(loss.detach())
            self.train_rec_loss(reconstruction.detach())
            self.log("ae/train/loss", self.train_loss, prog_bar=True, on_step=True, on_epoch=True)
            self.log("ae/train/rec_loss", self.train_rec_loss, on_step=True, on_epoch=True)
        else:
            self.log(f"ae/{split}/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True)
            self.log(f"ae/{split}/rec_loss", reconstruction, on_epoch=True, sync_dist=True)
        for name, value in {**out.losses, **{k: v for k, v in out.stats.items() if v.ndim == 0}}.items():
            # epoch-level only, so the sync across ranks happens once, at epoch end
            self.log(f"ae/{split}/{name}", value, on_step=False, on_epoch=True, sync_dist=True)
        return loss, out

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, _ = batch  # (B, 1, H, W)
        loss, _ = self._step(images, "train")
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"stage-1 loss became {loss.item()} at step {self.global_step}; lower the learning rate "
                "or use trainer.precision=32. The last good checkpoint is kept in the run's checkpoints/."
            )
        return loss

    # ---------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._code_counts = None
        self._grid_batch = None

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, _ = batch
        _, out = self._step(images, "val")
        pad = self.hparams.metric_crop
        recon_unit = to_unit(crop(out.reconstruction, pad))
        target_unit = to_unit(crop(images, pad))
        self.val_psnr(recon_unit, target_unit)
        self.val_ssim(recon_unit, target_unit)
        self.log("ae/val/psnr", self.val_psnr, on_epoch=True, prog_bar=True)
        self.log("ae/val/ssim", self.val_ssim, on_epoch=True)
        if "indices" in out.stats:  # VQ: usage must be measured over the whole epoch, not per batch
            counts = torch.bincount(out.stats["indices"].flatten(), minlength=self.autoencoder.quantizer.num_embeddings)
            self._code_counts = counts if self._code_counts is None else self._code_counts + counts
        if batch_idx == 0:
            n = self.hparams.num_grid_images
            self._grid_batch = torch.cat([images[:n], out.reconstruction[:n]])

    def on_validation_epoch_end(self) -> None:
        if self._code_counts is not None:
            counts = self.trainer.strategy.reduce(self._code_counts.float(), reduce_op="sum")
            usage, perplexity = codebook_statistics(counts)
            self.log("ae/val/codebook_usage", usage, sync_dist=False)
            self.log("ae/val/perplexity", perplexity, sync_dist=False)
            if not self.trainer.sanity_checking:
                log_histogram(self.trainer, "ae/val/codebook_usage_histogram", counts.cpu().numpy())
        if self._grid_batch is not None and not self.trainer.sanity_checking:
            n = self._grid_batch.shape[0] // 2
            # top rows: inputs, bottom rows: reconstructions
            grid = grid_uint8(self._grid_batch, nrow=max(1, min(n, 16)), pad=self.hparams.metric_crop)
            log_image_grid(
                self.trainer, "ae/val/reconstructions", grid, self.image_dir, "top: input, bottom: reconstruction"
            )

    def configure_optimizers(self) -> dict[str, Any]:
        total_steps = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else None
        return build_optimizers(
            self.autoencoder.parameters(),
            self.hparams.optimizer,
            self.hparams.lr_scheduler,
            total_steps,
            allow_fused=fused_allowed(self._trainer),
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stamp(checkpoint, STAGE, self.loggers)


def codebook_statistics(counts: torch.Tensor) -> tuple[float, float]:
    """Fraction of codes used at least once, and perplexity exp(H(p)) of the code distribution."""
    total = counts.sum()
    if total <= 0:
        return 0.0, 0.0
    probs = counts / total
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return float((counts > 0).float().mean()), float(math.exp(entropy.item()))


@torch.no_grad()
def compute_scale_factor(autoencoder: Autoencoder, images: torch.Tensor, batch_size: int = 256) -> float:
    """1 / std of the latents of ``images`` ((N, 1, H, W)): makes stage-2 inputs unit-variance."""
    was_training = autoencoder.training
    autoencoder.eval()
    device = next(iter(autoencoder.buffers())).device
    latents = [autoencoder.encode(chunk.to(device)).float().cpu() for chunk in images.split(batch_size)]
    autoencoder.train(was_training)
    std = torch.cat(latents).std().item()
    if not math.isfinite(std) or std <= 0:
        raise FloatingPointError(f"latent std is {std}; the autoencoder's latents are degenerate")
    return 1.0 / std
