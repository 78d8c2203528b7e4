"""Lightning DataModule serving MNIST-style digits as in-memory tensors.

The whole dataset (at most 70k images of 28x28 bytes) fits easily in RAM, so
instead of a PIL/transform pipeline we convert everything once in
:meth:`DigitsDataModule.setup` into float tensors in ``[-1, 1]`` and serve
them from a :class:`~torch.utils.data.TensorDataset`.  That makes loading
essentially free (no worker processes needed) and keeps runs reproducible.

Images are padded from 28x28 to ``image_size`` (32 by default) with the
background value ``-1`` so that U-Nets / autoencoders with several 2x
downsamplings see power-of-two sizes (32 -> 16 -> 8 -> 4).
"""

from __future__ import annotations

import hashlib
import logging

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from tinyldm.data.sources import (
    DATASET_NAMES,
    IMAGE_HW,
    NUM_CLASSES,
    SOURCES,
    DataArrays,
    load_arrays,
)
from tinyldm.utils.images import from_uint8

log = logging.getLogger(__name__)

__all__ = ["DigitsDataModule"]

_RAW_SIZE = IMAGE_HW[0]  # 28


def _to_dataset(images: np.ndarray, labels: np.ndarray, pad: int) -> TensorDataset:
    return TensorDataset(from_uint8(images, pad), torch.from_numpy(labels.astype(np.int64)))


class DigitsDataModule(L.LightningDataModule):
    """MNIST / Fashion-MNIST as a Lightning DataModule.

    Args:
        name: ``"mnist"``, ``"mnist_5k"`` or ``"fashion_mnist"``.
        root: Folder with the IDX files or torchvision download target
            (``null`` is fine for ``mnist_5k``).
        source: ``"auto"``, ``"local"``, ``"torchvision"`` or ``"bundled"``;
            see :func:`tinyldm.data.load_arrays`.
        val_fraction: Fraction of the *training* split held out for
            validation, in the open interval (0, 1).  Validation and every
            evaluation use this split; the official test split is left untouched.
        batch_size: Batch size **per device**: under DDP Lightning wraps the
            loaders in a ``DistributedSampler``, so the effective global batch
            is ``batch_size * world_size``.
        num_workers: DataLoader workers.  0 is usually best here since the
            data are already tensors in memory.
        pin_memory: Pin host memory for faster host-to-GPU copies.
        seed: Seeds the train/val split and the training shuffle order.
        image_size: Output side length; 28 means no padding, otherwise
            ``(image_size - 28)`` must be even (padding is symmetric).
        max_train_samples: If set, truncate the training split (after the
            train/val split, so validation is unaffected) for quick runs.

    After :meth:`setup`: ``train_dataset``, ``val_dataset`` and ``source_used``.
    """

    def __init__(
        self,
        name: str,
        root: str | None = None,
        source: str = "auto",
        val_fraction: float = 0.1,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        image_size: int = 32,
        max_train_samples: int | None = None,
    ) -> None:
        super().__init__()
        self._validate_args(name, source, val_fraction, batch_size, num_workers, image_size, max_train_samples)
        self.save_hyperparameters(logger=False)
        self.name = name
        self.root = root
        self.source = source
        self.val_fraction = float(val_fraction)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.max_train_samples = max_train_samples

        self._arrays: DataArrays | None = None
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None
        self._fingerprint: dict[str, object] | None = None
        # One generator for the module's lifetime so that re-created train
        # loaders continue the shuffle stream instead of repeating epoch 0.
        self._shuffle_generator = torch.Generator().manual_seed(self.seed)

    # ------------------------------------------------------------------ validation

    @staticmethod
    def _validate_args(
        name: str,
        source: str,
        val_fraction: float,
        batch_size: int,
        num_workers: int,
        image_size: int,
        max_train_samples: int | None,
    ) -> None:
        """Fail at construction (i.e. at Hydra instantiation), not mid-run."""
        if name not in DATASET_NAMES:
            raise ValueError(f"unknown dataset name {name!r}; allowed: {', '.join(DATASET_NAMES)}")
        if source not in SOURCES:
            raise ValueError(f"unknown dataset source {source!r}; allowed: {', '.join(SOURCES)}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in the open interval (0, 1), got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if image_size < _RAW_SIZE or (image_size - _RAW_SIZE) % 2:
            raise ValueError(
                f"image_size must be >= {_RAW_SIZE} with (image_size - {_RAW_SIZE}) even "
                f"(symmetric padding), got {image_size}; e.g. 28, 30 or 32"
            )
        if max_train_samples is not None and max_train_samples < 1:
            raise ValueError(f"max_train_samples must be >= 1 or null, got {max_train_samples}")

    # ------------------------------------------------------------------ static info

    @property
    def pad(self) -> int:
        """Pixels of background padding added on each side of the 28x28 image."""
        return (self.image_size - _RAW_SIZE) // 2

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the served images, known before setup."""
        return (1, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int:
        """Number of label classes (known before setup, e.g. to size embeddings)."""
        return self._arrays.num_classes if self._arrays is not None else NUM_CLASSES

    @property
    def source_used(self) -> str | None:
        """Where the data actually came from (``None`` until data are loaded)."""
        return self._arrays.source if self._arrays is not None else None

    def fingerprint(self) -> dict[str, object]:
        """What the training split actually holds: source used, size and a SHA-256 of the tensors.

        Keys caches of models trained on this split (the stage-1 cache): the configured
        ``source=auto`` says nothing about whether the offline 5k fallback or full MNIST was read.
        """
        self.setup("fit")
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for tensor in self.train_dataset.tensors:  # images (N, 1, S, S) float32, labels (N,) int64
                digest.update(tensor.contiguous().numpy().tobytes())
            self._fingerprint = {
                "source_used": self.source_used,
                "num_train": len(self.train_dataset),
                "train_sha256": digest.hexdigest(),
            }
        return dict(self._fingerprint)

    # ------------------------------------------------------------------ loading

    def _load(self) -> DataArrays:
        """Load the raw arrays once; later calls return the cached arrays."""
        if self._arrays is None:
            self._arrays = load_arrays(self.name, self.root, self.source)
            log.info(
                "Dataset %s: %d training images (before val split), test split: %s, source: %s",
                self.name,
                len(self._arrays.train_images),
                "none" if self._arrays.test_images is None else len(self._arrays.test_images),
                self._arrays.source,
            )
        return self._arrays

    def prepare_data(self) -> None:
        """Load (downloading if necessary) once on local rank 0 before ``setup``.

        Not required -- ``setup`` loads on its own -- but under DDP it makes
        rank 0 do any torchvision download before the other ranks look for
        the files, so they find them on disk instead of racing to download.
        """
        self._load()

    def _split_indices(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Seeded shuffle, then split into (train, val) index arrays.

        Shuffling first matters: the bundled subset is sorted by label, so an
        unshuffled tail split would validate on nines only.
        """
        if n < 2:
            raise ValueError(f"need at least 2 training images to split off validation data, got {n}")
        order = np.random.default_rng(self.seed).permutation(n)
        n_val = min(n - 1, max(1, round(n * self.val_fraction)))
        return order[n_val:], order[:n_val]

    def setup(self, stage: str | None = None) -> None:
        """Build the in-memory datasets; idempotent (a second call is a no-op)."""
        if self.train_dataset is not None:
            return
        arrays = self._load()
        train_idx, val_idx = self._split_indices(len(arrays.train_images))
        if self.max_train_samples is not None:
            train_idx = train_idx[: self.max_train_samples]

        self.train_dataset = _to_dataset(arrays.train_images[train_idx], arrays.train_labels[train_idx], self.pad)
        self.val_dataset = _to_dataset(arrays.train_images[val_idx], arrays.train_labels[val_idx], self.pad)
        log.info(
            "Splits: train=%d val=%d, image shape %s", len(self.train_dataset), len(self.val_dataset), self.image_shape
        )

    # ------------------------------------------------------------------ loaders

    def _loader(self, dataset: TensorDataset | None, split: str, shuffle: bool) -> DataLoader:
        """Training batches of ``batch_size``; evaluation batches of at least 256 (no gradients to hold)."""
        if dataset is None:
            raise RuntimeError(f"{split}_dataloader() called before setup()")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if split == "train" else max(self.batch_size, 256),
            shuffle=shuffle,
            generator=self._shuffle_generator if shuffle else None,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training batches of ``(images (B, 1, S, S), labels (B,))``."""
        return self._loader(self.train_dataset, "train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, "val", shuffle=False)

    # ------------------------------------------------------------------ helpers

    def from_uint8(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, 28, 28)`` pixels -> model-space ``(N, 1, S, S)`` in [-1, 1], padded like the training data."""
        return from_uint8(np.asarray(images, dtype=np.uint8), self.pad)
