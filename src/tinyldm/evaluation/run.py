"""Evaluate a stage-2 model or a samples file against a dataset, with the real-data floor beside it.

Shared by the end of training (``tasks/stage2.py``) and ``evaluate.py`` so both report the same
figures under the same keys (``eval/cond_acc``, ``eval/fid``, ``eval/fid_floor``, ...).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyldm.evaluation.classifier import dataset_arrays, load_or_train_classifier
from tinyldm.evaluation.metrics import evaluate_samples

log = logging.getLogger(__name__)
SCALAR_KEYS = ("cond_acc", "fid", "fid_floor", "fid_ratio", "classifier_acc", "diversity", "num_samples")


def score(images: np.ndarray, labels: np.ndarray, datamodule: Any, cache_dir: str | Path,
          classifier_epochs: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Scores of uint8 ``images`` (N, 28, 28) requested as ``labels`` (N,) on ``datamodule``'s held-out split."""
    datamodule.setup()
    if tuple(images.shape[1:]) != (28, 28):
        raise ValueError(f"samples have image size {tuple(images.shape[1:])}, but dataset {datamodule.name!r} "
                         "has 28x28 images (after removing the padding)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    classifier, info = load_or_train_classifier(datamodule.name, datamodule, cache_dir, epochs=classifier_epochs, device=device)
    reference_images, reference_labels = dataset_arrays(datamodule.val_dataset)
    train_images, _ = dataset_arrays(datamodule.train_dataset)
    result = evaluate_samples(images, labels, reference_images, reference_labels, classifier, datamodule.num_classes,
                              real_floor_images_uint8=train_images, seed=seed)
    result["classifier_test_acc"] = info["test_accuracy"]
    result["classifier_cache"] = info["cache_path"]
    return result


def prefixed(result: dict[str, Any], prefix: str = "eval/") -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in result.items()}


def format_table(result: dict[str, Any], title: str = "evaluation") -> str:
    """A small text table of the headline figures (the JSON holds everything)."""
    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [title, "-" * len(title)]
    lines += [f"{key:<22}{fmt(result.get(key))}" for key in (*SCALAR_KEYS, "classifier_test_acc")]
    per_class = result.get("per_class_acc")
    if per_class:
        lines.append("per-class accuracy    " + " ".join("-" if a is None else f"{a:.2f}" for a in per_class))
    return "\n".join(lines)
