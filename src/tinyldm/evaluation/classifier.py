"""A small digit classifier that turns generated images into numbers offline.

Why our own network instead of Inception: FID's Inception-v3 weights need a
download (impossible on offline nodes) and were trained on ImageNet photos, so
their features say little about 28x28 digits.  A CNN trained on the dataset's
own training split gives (a) a conditional-accuracy check ("does a sample
requested as a 3 look like a 3?") and (b) a feature space for a Fréchet
distance that actually separates digit shapes.

Samples and real data go through the identical path -- uint8 ``(N, 28, 28)``
-> float ``(N, 1, 28, 28)`` in [0, 1] (:func:`to_input`) -- so the metric
cannot be fooled by a preprocessing difference (padding, [-1, 1] scaling).
The classifier is trained once per dataset/split and cached on disk, because
comparisons between runs are only meaningful with the *same* classifier.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from tinyldm.lit.optim import one_cycle_pct_start
from tinyldm.utils.files import save_torch
from tinyldm.utils.images import to_uint8

log = logging.getLogger(__name__)

__all__ = [
    "DigitClassifier",
    "to_input",
    "dataset_arrays",
    "predict",
    "train_classifier",
    "load_or_train_classifier",
    "load_or_train_classifiers",
]

# Bump when the architecture or training recipe changes: invalidates cached classifiers.
CLASSIFIER_VERSION = 1
_CACHE_FORMAT = "tinyldm-digit-classifier"
_TRAIN_BUDGET = 45_000  # images seen in training: ~10 epochs of mnist_5k, 1 of full MNIST


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` -> float32 ``(N, 1, 28, 28)`` in [0, 1], the classifier's only input."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise ValueError(f"classifier input must be uint8 pixels (N, 28, 28), got dtype {x.dtype}")
    return x.float().div(255.0).unsqueeze(1)


def dataset_arrays(dataset: TensorDataset, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """A DigitsDataModule split -> (uint8 ``(N, 28, 28)`` images, int64 ``(N,)`` labels).

    Undoes the module's padding (``pad`` pixels a side) and [-1, 1] scaling, so real data reach the
    classifier exactly as sampled images do.
    """
    images, labels = dataset.tensors[0], dataset.tensors[1]
    return to_uint8(images, pad), labels.numpy().astype(np.int64)


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    # Pool before BN/ReLU: identical result for max-pooling, 4x less BN/ReLU work on CPU.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(c_out), nn.ReLU()]


class DigitClassifier(nn.Module):
    """Three conv blocks (28 -> 14 -> 7 -> 3 px), a ``num_features``-wide feature layer, a linear head.

    :meth:`features` (post-ReLU penultimate activations) is the embedding used
    for FID and diversity; ``forward`` returns logits.  Runs channels-last,
    which is about 2x faster for these small convolutions on CPU.
    """

    def __init__(self, num_classes: int = 10, num_features: int = 128, widths: tuple[int, int, int] = (32, 48, 64)):
        super().__init__()
        if num_classes < 2 or num_features < 1:
            raise ValueError(f"need num_classes >= 2 and num_features >= 1, got {num_classes} and {num_features}")
        self.num_classes = int(num_classes)
        self.num_features = int(num_features)
        c1, c2, c3 = widths
        self.body = nn.Sequential(
            *_conv(1, c1),
            *_conv(c1, c2),
            *_conv(c2, c3),  # (N, c3, 3, 3)
            nn.Flatten(),
            nn.Linear(c3 * 9, num_features, bias=False),
            nn.BatchNorm1d(num_features),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(num_features, num_classes))
        self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 28, 28)`` in [0, 1] -> ``(N, num_features)``."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"DigitClassifier expects images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
        return self.body(x.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 28, 28)`` in [0, 1] -> logits ``(N, num_classes)``."""
        return self.head(self.features(x))


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict(
    model: DigitClassifier, images_uint8: np.ndarray, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode pass over uint8 ``(N, 28, 28)`` -> (features ``(N, F)``, predicted class ``(N,)``), on CPU."""
    model.eval()
    feats, preds = [], []
    for start in range(0, len(images_uint8), batch_size):
        x = to_input(images_uint8[start : start + batch_size]).to(_device(model))
        f = model.features(x)
        feats.append(f.float().cpu())
        preds.append(model.head(f).argmax(dim=1).cpu())
    return torch.cat(feats), torch.cat(preds)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shift (±2 px), rotation (±10°) and scale (±10%) per image: ``(B, 1, 28, 28)`` -> same.

    With only 4500 training digits the network otherwise memorises stroke
    positions; these small affine jitters are what real handwriting varies by.
    """
    b = x.shape[0]
    u = torch.rand(b, 4, generator=generator).mul(2).sub(1)  # (B, 4) in [-1, 1]
    angle, scale = u[:, 0] * math.radians(10.0), 1.0 + 0.1 * u[:, 1]
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, 0, 1], theta[:, 1, 0] = -torch.sin(angle) / scale, torch.sin(angle) / scale
    theta[:, :, 2] = u[:, 2:] * (2.0 / 14.0)  # 2 px in normalised coordinates (28 px span 2 units)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def default_epochs(num_train: int) -> int:
    """Epochs so that training sees about 45k images: 10 on mnist_5k, 1 on full MNIST."""
    return max(1, math.ceil(_TRAIN_BUDGET / max(1, num_train)))


def train_classifier(
    train_images_uint8: np.ndarray,
    train_labels: np.ndarray,
    val_images_uint8: np.ndarray,
    val_labels: np.ndarray,
    epochs: int | None = None,
    seed: int = 0,
    num_features: int = 128,
    num_classes: int | None = None,
    batch_size: int = 128,
    lr: float = 3e-3,
    device: str | torch.device = "cpu",
) -> tuple[DigitClassifier, float]:
    """Train a :class:`DigitClassifier` from scratch; return (eval-mode model, held-out accuracy).

    Seeded and isolated from the global RNG (``fork_rng``), so calling it does
    not perturb a surrounding experiment.  ``epochs=None`` picks
    :func:`default_epochs` for the training-set size.
    """
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.int64)
    num_classes = int(num_classes or int(labels.max()) + 1)
    epochs = default_epochs(len(labels)) if epochs is None else int(epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    x_all = to_input(train_images_uint8)  # (N, 1, 28, 28)
    if len(x_all) != len(labels):
        raise ValueError(f"{len(x_all)} training images but {len(labels)} labels")
    device = torch.device(device)
    cuda_devices = (
        [] if device.type != "cuda" else [torch.cuda.current_device() if device.index is None else device.index]
    )
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        model = DigitClassifier(num_classes, num_features).to(device)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        steps = epochs * math.ceil(len(labels) / batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=steps, pct_start=one_cycle_pct_start(0.2, steps)
        )
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(labels), generator=generator).split(batch_size):
                xb = _augment(x_all[idx].to(device), generator)
                loss = F.cross_entropy(model(xb), labels[idx].to(device), label_smoothing=0.1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    _, preds = predict(model, val_images_uint8)
    accuracy = (preds == torch.as_tensor(np.asarray(val_labels))).double().mean().item()
    return model, accuracy


def _full_train_datamodule(datamodule: Any) -> Any:
    """The same data/split without ``max_train_samples``: every run gets the same classifier."""
    if getattr(datamodule, "max_train_samples", None) is None:
        return datamodule
    source = (datamodule.source_used or datamodule.source).split(":")[0]
    log.info("training the evaluation classifier on the full train split (ignoring max_train_samples)")
    full = type(datamodule)(
        name=datamodule.name,
        root=datamodule.root,
        source=source,
        val_fraction=datamodule.val_fraction,
        seed=datamodule.seed,
        image_size=datamodule.image_size,
    )
    full.setup()
    return full


def _read_cache(
    path: Path, identity: dict[str, Any], num_classes: int, num_features: int
) -> tuple[DigitClassifier, float] | None:
    """Load a cached classifier; None (with a warning) when it is unreadable or for other settings."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != _CACHE_FORMAT:
            raise ValueError(f"not a {_CACHE_FORMAT} file")
        if payload.get("identity") != identity:
            raise ValueError(f"written for other settings {payload.get('identity')}, expected {identity}")
        model = DigitClassifier(num_classes, num_features)
        model.load_state_dict(payload["state_dict"])
        # caches written before the key was named for the split it is measured on say "test_accuracy"
        return model.eval(), float(payload["val_accuracy"] if "val_accuracy" in payload else payload["test_accuracy"])
    except Exception as error:  # torch.load raises many types for a corrupt file
        log.warning("cached classifier %s is unusable (%s: %s); retraining it", path, type(error).__name__, error)
        return None


def load_or_train_classifier(
    dataset_key: str,
    datamodule: Any,
    cache_dir: str | Path,
    epochs: int | None = None,
    seed: int = 0,
    num_features: int = 128,
    device: str | torch.device = "cpu",
) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train the evaluation classifier once per dataset/split and reuse it from ``cache_dir``.

    Trains on the datamodule's train split and reports accuracy on its val
    split -- the held-out split every evaluation compares against.  The cache
    file ``cache_dir/classifiers/<dataset_key>-<hash>.pt`` is keyed on the
    dataset name, data source, split seed, val fraction, split sizes and the
    classifier hyperparameters; an unreadable or mismatching file is retrained
    with a warning rather than silently reused.

    Returns:
        ``(model, info)`` with info keys ``val_accuracy`` (on the held-out split), ``cache_path``,
        ``reused``, ``key``, ``num_train``, ``num_val``, ``epochs``.
    """
    (member,) = load_or_train_classifiers(dataset_key, datamodule, cache_dir, [seed], epochs, num_features, device)
    return member


def load_or_train_classifiers(
    dataset_key: str,
    datamodule: Any,
    cache_dir: str | Path,
    seeds: list[int],
    epochs: int | None = None,
    num_features: int = 128,
    device: str | torch.device = "cpu",
) -> list[tuple[DigitClassifier, dict[str, Any]]]:
    """:func:`load_or_train_classifier` for each of ``seeds``, with the data prepared once for all of them."""
    datamodule.setup()
    datamodule = _full_train_datamodule(datamodule)
    train_images, train_labels = dataset_arrays(datamodule.train_dataset, datamodule.pad)
    val_images, val_labels = dataset_arrays(datamodule.val_dataset, datamodule.pad)
    epochs = default_epochs(len(train_labels)) if epochs is None else int(epochs)
    split = {
        "version": CLASSIFIER_VERSION,
        "dataset_key": dataset_key,
        "name": datamodule.name,
        "source": (datamodule.source_used or datamodule.source).split(":")[0],
        "split_seed": datamodule.seed,
        "val_fraction": datamodule.val_fraction,
        "num_train": len(train_labels),
        "num_val": len(val_labels),
        "num_classes": datamodule.num_classes,
        "num_features": num_features,
        "epochs": epochs,
    }
    members = []
    for seed in seeds:
        identity = {**split, "seed": seed}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        key = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', dataset_key)}-{digest}"
        path = Path(cache_dir) / "classifiers" / f"{key}.pt"
        info: dict[str, Any] = {
            "key": key,
            "cache_path": str(path),
            "num_train": len(train_labels),
            "num_val": len(val_labels),
            "epochs": epochs,
        }

        cached = _read_cache(path, identity, datamodule.num_classes, num_features) if path.exists() else None
        if cached is not None:
            model, accuracy = cached
            log.info("reusing cached classifier %s (held-out accuracy %.4f)", path, accuracy)
            members.append((model.to(device), {**info, "val_accuracy": accuracy, "reused": True}))
            continue

        start = time.perf_counter()
        model, accuracy = train_classifier(
            train_images,
            train_labels,
            val_images,
            val_labels,
            epochs=epochs,
            seed=seed,
            num_features=num_features,
            num_classes=datamodule.num_classes,
            device=device,
        )
        log.info(
            "trained classifier for %s in %.1fs: held-out accuracy %.4f",
            dataset_key,
            time.perf_counter() - start,
            accuracy,
        )
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        record = {"format": _CACHE_FORMAT, "identity": identity, "state_dict": state, "val_accuracy": accuracy}
        save_torch(record, path)  # atomic: concurrent runs never read half a file
        members.append((model, {**info, "val_accuracy": accuracy, "reused": False}))
    return members
