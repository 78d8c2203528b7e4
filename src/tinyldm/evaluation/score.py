"""Evaluate a stage-2 model or a samples file against a dataset, with the real-data floor beside it.

Shared by the end of training (``training/stage2.py``) and ``evaluate.py`` so both report the same
figures under the same keys (``eval/cond_acc``, ``eval/fid``, ``eval/fid_floor``, ...).
"""

from __future__ import annotations

import logging
import re
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyldm.autoencoders.base import Autoencoder
from tinyldm.evaluation.classifier import dataset_arrays, load_or_train_classifiers
from tinyldm.evaluation.metrics import MEMBER_KEYS, evaluate_samples
from tinyldm.evaluation.misreads import majority
from tinyldm.utils.images import to_uint8

log = logging.getLogger(__name__)
# the headline figures: the accuracy with its interval, then every figure each classifier reads
SCALAR_KEYS = ("cond_acc", "cond_acc_low", "cond_acc_high", *MEMBER_KEYS[1:], "num_samples", "classifier_members")


def score(
    images: np.ndarray,
    labels: np.ndarray,
    datamodule: Any,
    cache_dir: str | Path,
    classifier_epochs: int | None = None,
    seed: int = 0,
    autoencoder: Autoencoder | None = None,
    classifier_members: int = 1,
) -> dict[str, Any]:
    """Scores of uint8 ``images`` (N, 28, 28) requested as ``labels`` (N,) on ``datamodule``'s held-out split.

    With the run's stage-1 ``autoencoder``, the real-floor subset is also scored after encode -> decode
    (the reconstruction ceiling: ``fid_recon``, ``recon_acc``). ``classifier_members`` > 1 reads the
    samples with that many evaluation classifiers (seeds 0..k-1, each cached like the first, which is
    the one-classifier evaluation's own) and reports each figure as their mean, each member's beside it.
    """
    if isinstance(classifier_members, bool) or not isinstance(classifier_members, int) or classifier_members < 1:
        raise ValueError(f"classifier_members={classifier_members!r} is not allowed: it must be an integer >= 1")
    datamodule.setup()
    if tuple(images.shape[1:]) != (28, 28):
        raise ValueError(
            f"samples have image size {tuple(images.shape[1:])}, but dataset {datamodule.name!r} "
            "has 28x28 images (after removing the padding)"
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    members = load_or_train_classifiers(
        datamodule.name, datamodule, cache_dir, list(range(classifier_members)), classifier_epochs, device=device
    )
    reference_images, reference_labels = dataset_arrays(datamodule.val_dataset, datamodule.pad)
    train_images, train_labels = dataset_arrays(datamodule.train_dataset, datamodule.pad)
    reconstruct = None if autoencoder is None else partial(reconstruct_uint8, autoencoder, datamodule)
    result = evaluate_samples(
        images,
        labels,
        reference_images,
        reference_labels,
        [model for model, _ in members],
        datamodule.num_classes,
        real_floor_images_uint8=train_images,
        seed=seed,
        real_floor_labels=train_labels,
        reconstruct=reconstruct,
    )
    result["classifier_val_acc"] = float(np.mean([info["val_accuracy"] for _, info in members]))
    result["classifier_cache"] = members[0][1]["cache_path"]  # the other members sit beside it
    return result


@torch.no_grad()
def reconstruct_uint8(
    autoencoder: Autoencoder, datamodule: Any, images: np.ndarray, batch_size: int = 500
) -> np.ndarray:
    """uint8 (N, 28, 28) -> the datamodule's model space -> encode -> decode (fp32, eval mode) -> uint8 (N, 28, 28)."""
    was_training = autoencoder.training
    autoencoder.eval()
    device = next(iter(autoencoder.buffers())).device
    out = []
    with torch.autocast(device_type=device.type, enabled=False):
        for chunk in np.array_split(images, max(1, -(-len(images) // batch_size))):
            x = datamodule.from_uint8(chunk).to(device)  # (B, 1, S, S) in [-1, 1]
            out.append(to_uint8(autoencoder.decode(autoencoder.encode(x).float()), datamodule.pad))
    autoencoder.train(was_training)
    return np.concatenate(out)


def prefixed(result: dict[str, Any], prefix: str = "eval/") -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in result.items()}


def format_table(result: dict[str, Any], title: str = "evaluation") -> str:
    """A small text table of the headline figures (the JSON holds everything)."""

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    def members(key: str) -> str:
        """With several classifiers, the range of their own readings: how much the instrument alone moves."""
        values = [result[k] for k in result if re.fullmatch(rf"member\d+_{key}", k)]
        values = [v for v in values if v is not None]
        return f"   (members {fmt(min(values))} .. {fmt(max(values))})" if len(values) > 1 else ""

    lines = [title, "-" * len(title)]
    lines += [f"{key:<22}{fmt(result.get(key))}{members(key)}" for key in (*SCALAR_KEYS, "classifier_val_acc")]
    per_class = result.get("per_class_acc")
    if per_class:
        lines.append("per-class accuracy    " + " ".join("-" if a is None else f"{a:.2f}" for a in per_class))
    misread, k = result.get("misread"), int(result.get("classifier_members") or 1)
    if misread is not None:
        counted = sum(m["votes"] >= majority(k) for m in misread)
        by = "" if k == 1 else f" by a majority of the {k} classifiers ({len(misread)} by at least one)"
        lines.append(f"{'misread':<22}{counted} samples{by}")
    if result.get("classifier_members") == 1:  # say so where the figures are read, not only in the docs
        lines.append(
            "(read by one classifier; another of the same recipe reads the same samples differently: "
            "evaluation.classifier_members=5 averages five, docs/experiments/classifier-share.md)"
        )
    return "\n".join(lines)
