"""Stage-2 data: the image dataset encoded ONCE by the frozen autoencoder.

Running the encoder at every diffusion step would cost more than the UNet itself on CPU; the
stage-1 model is frozen, so its latents never change and can be computed up front. Latents are
multiplied by the autoencoder's ``scale_factor`` here, so everything downstream sees
unit-variance data. Under DDP every rank encodes the same (unshuffled) data with the same weights,
so the caches are identical across ranks without any communication.
"""

from __future__ import annotations

import logging
import time

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from tinyldm.autoencoders.base import Autoencoder

log = logging.getLogger(__name__)


@torch.no_grad()
def encode_dataset(
    autoencoder: Autoencoder, dataset: TensorDataset, device: torch.device | str = "cpu", batch_size: int = 512
) -> LatentDataset:
    """(N, 1, H, W) images + labels -> (N, C, h, w) scaled latents + the same labels, in fp32."""
    images, labels = dataset.tensors
    autoencoder = autoencoder.eval()
    original_device = next(iter(autoencoder.buffers())).device
    autoencoder.to(device)
    scale = autoencoder.scale_factor.float()
    chunks = []
    with torch.autocast(device_type=torch.device(device).type, enabled=False):  # cache stays fp32
        for chunk in images.split(batch_size):
            chunks.append((autoencoder.encode(chunk.to(device).float()).float() * scale).cpu())
    autoencoder.to(original_device)
    return LatentDataset(torch.cat(chunks), labels.clone())


class LatentDataset(TensorDataset):
    """A ``TensorDataset`` that hands out whole batches by indexing its tensors once.

    ``DataLoader`` calls ``__getitems__`` with a batch's indices when a dataset has one, so a batch
    is one gather per tensor instead of ``batch_size`` item look-ups and a collate.
    """

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(tensor[index] for tensor in self.tensors)


def already_batched(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate function for :class:`LatentDataset` batches: nothing left to collate."""
    return batch


class LatentDataModule(L.LightningDataModule):
    """Wraps an image datamodule; serves (scaled latent, condition) batches for stage 2.

    The condition is the label, or whatever ``conditioner.conditions_for(images, labels)`` makes of
    each image (the text conditioner: label and measured attribute bins).
    """

    def __init__(
        self,
        images: L.LightningDataModule,
        autoencoder: Autoencoder,
        batch_size: int = 128,
        seed: int = 0,
        conditioner: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"diffusion.batch_size={batch_size} must be >= 1")
        self.images = images
        self.autoencoder = autoencoder
        self.batch_size = batch_size
        self.seed = seed
        self.conditioner = conditioner
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self.images.setup(stage)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        start = time.perf_counter()
        val_images = self._validated_part(self.images.val_dataset)
        self.train_dataset = encode_dataset(self.autoencoder, self.images.train_dataset, device)
        self.val_dataset = encode_dataset(self.autoencoder, val_images, device)
        if self.conditioner is not None:
            # what the conditioner reads per image: the label, or (text) the label and attribute bins measured on
            # the image, with the bins' edges fitted on the training split
            train = self.conditioner.conditions_for(*self.images.train_dataset.tensors, fit=True)  # (N,) or (N, 1+A)
            val = self.conditioner.conditions_for(*val_images.tensors)
            self.train_dataset = LatentDataset(self.train_dataset.tensors[0], train)
            self.val_dataset = LatentDataset(self.val_dataset.tensors[0], val)
        latents = self.train_dataset.tensors[0]
        log.info(
            "Encoded %d training and %d validation images into latents of shape %s in %.1fs (latent std %.3f after "
            "scaling)",
            len(self.train_dataset),
            len(self.val_dataset),
            tuple(latents.shape[1:]),
            time.perf_counter() - start,
            latents.std().item(),
        )

    def _validated_part(self, dataset: TensorDataset) -> TensorDataset:
        """Only the validation images the trainer will read (``limit_val_batches`` batches) are encoded."""
        limit = self.trainer.limit_val_batches if self.trainer is not None else None
        if not isinstance(limit, int):
            return dataset
        return TensorDataset(*(tensor[: limit * self.val_batch_size] for tensor in dataset.tensors))

    @property
    def val_batch_size(self) -> int:
        return max(self.batch_size, 256)

    def train_dataloader(self) -> DataLoader:
        """Shuffled per epoch from (seed, epoch), each rank its own shard.

        A run resumed from an epoch-boundary checkpoint sees exactly the batches an uninterrupted
        run would have (Lightning calls ``set_epoch`` before every epoch). The sampler shards
        itself: Lightning would wrap any other sampler in a ``DistributedSamplerWrapper``, whose
        ``set_epoch`` never reaches the wrapped sampler.
        """
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        sampler = DistributedSampler(
            self.train_dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed * 100_003
        )
        return DataLoader(self.train_dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=already_batched)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_dataset, batch_size=self.val_batch_size, shuffle=False, collate_fn=already_batched)
