"""Sample-quality metrics in the digit classifier's feature space, all computable offline.

What a number means here:

* ``cond_acc`` -- fraction of samples the classifier assigns to the class they
  were requested as; capped by the classifier's own accuracy (``classifier_acc``).
  ``cond_acc_low`` / ``cond_acc_high`` bound it with a 95 % Wilson interval (scipy's
  ``binomtest``): at 99.5 % of 1,000 samples that is 98.8-99.8 %, so two runs a few samples
  apart are not told apart by this figure.
* ``fid`` -- Fréchet distance (torchmetrics' implementation) between classifier
  features of the samples and of the held-out reference split.  Absolute values
  depend on the feature space and on N, so it is reported next to ``fid_floor``:
  the FID of an equally large set of *real training* images against the same
  reference, i.e. what a perfect generator would score.  ``fid_ratio`` ~ 1 is
  as good as it gets.
* ``diversity`` -- per-class feature spread of the samples over that of real
  data: ~1 is healthy, << 1 means mode collapse (FID alone can hide it when the
  collapsed modes sit near the class means).

Every figure above depends on the classifier that reads it: classifiers trained by the same recipe
with different seeds, equally accurate on real digits, read the same samples further apart than the
differences between most sampler settings (docs/experiments/classifier-share.md).
Passing several classifiers (the evaluation's ``classifier_members``, seeds 0..k-1) reports each
figure as the mean over them -- the same expected value as one classifier, with less of that noise
-- and each member's own figures beside it (``member<i>_<key>``), so a difference can be weighed
against what the instrument alone moves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import binomtest
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.image.fid import FrechetInceptionDistance

from tinyldm.evaluation.classifier import DigitClassifier, predict, to_input
from tinyldm.evaluation.misreads import misreads

log = logging.getLogger(__name__)

__all__ = ["ClassifierFeatures", "validate_samples", "evaluate_samples", "MIN_SAMPLES", "MEMBER_KEYS"]

# FID estimates a covariance: 2 images is the mathematical minimum, but below a
# few dozen the estimate is noise.  (Full rank needs num_features + 1 = 129.)
MIN_SAMPLES = 50


class ClassifierFeatures(nn.Module):
    """Adapter that lets torchmetrics' ``FrechetInceptionDistance(feature=...)`` use a DigitClassifier.

    torchmetrics hands a custom feature module the images exactly as given to
    ``update`` (its ``normalize`` flag only rescales for the built-in Inception)
    and reads ``num_features`` to size its state, so nothing is downloaded.
    Accepts float ``(N, 1, 28, 28)`` in [0, 1], or uint8 ``(N, 28, 28)`` /
    ``(N, 1, 28, 28)``.  Like torchmetrics' Inception wrapper it never leaves
    eval mode: BatchNorm batch statistics would make features depend on batch
    composition.
    """

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = int(classifier.num_features)
        self.train(False)

    def train(self, mode: bool = True) -> ClassifierFeatures:
        return super().train(False)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """Images -> ``(N, num_features)`` float features."""
        if imgs.dtype == torch.uint8:
            imgs = imgs.float().div(255.0)
        elif not imgs.is_floating_point():
            raise TypeError(f"expected uint8 or float images in [0, 1], got dtype {imgs.dtype}")
        if imgs.ndim == 3:
            imgs = imgs.unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
        with torch.no_grad():
            return self.classifier.features(imgs.float())


def validate_samples(
    images: Any,
    labels: Any,
    num_classes: int,
    image_shape: tuple[int, int] = (28, 28),
    min_samples: int = MIN_SAMPLES,
    what: str = "samples",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check images/labels before scoring; return them as (uint8 array, int64 array or None).

    Raises a ``ValueError`` that names the problem and what is allowed, because
    a bad sample file otherwise surfaces as a shape error deep in a metric.
    ``labels=None`` skips the label checks (e.g. for the real-floor images).
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    expected = f"(N, {image_shape[0]}, {image_shape[1]})"
    if images.ndim != 3 or tuple(images.shape[1:]) != tuple(image_shape):
        hint = ""
        if images.ndim == 4 and images.shape[1] == 1:
            hint = "; drop the channel axis (images[:, 0])"
        elif images.ndim == 3 and images.shape[1] == images.shape[2] and images.shape[1] > image_shape[0]:
            hint = "; crop the padding first (tinyldm.utils.images.to_uint8 does)"
        elif images.ndim == 3:
            hint = "; the classifier was built for 28x28 digits (does this dataset use another image size?)"
        raise ValueError(f"{what}: expected images of shape {expected}, got {tuple(images.shape)}{hint}")
    if images.dtype != np.uint8:
        if np.issubdtype(images.dtype, np.floating):
            bad = int((~np.isfinite(images)).sum())
            if bad:
                raise ValueError(f"{what}: float images contain {bad} NaN/Inf values; the generator diverged")
            raise ValueError(
                f"{what}: images must be uint8 pixels 0..255, got float ({images.dtype}, range "
                f"[{images.min():.3g}, {images.max():.3g}]); convert model output in [-1, 1] "
                "with tinyldm.utils.images.to_uint8"
            )
        raise ValueError(f"{what}: images must be uint8 pixels 0..255, got dtype {images.dtype}")
    n = len(images)
    if n < min_samples:
        raise ValueError(f"{what}: FID needs at least {min_samples} images for a usable covariance estimate, got {n}")
    if labels is None:
        return np.ascontiguousarray(images), None
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{what}: expected labels of shape ({n},) to match {n} images, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers (class index, -1 = unconditional), got dtype {labels.dtype}")
    bad = (labels < -1) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"{what}: labels must lie in [-1, {num_classes}) (-1 = unconditional), got "
            f"{int(bad.sum())} out of range, e.g. {int(labels[bad][0])}"
        )
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _class_spread(features: torch.Tensor, groups: torch.Tensor, num_classes: int) -> dict[int, float]:
    """Per class: RMS distance of its features ``(N, F)`` to the class centroid (classes with >= 2 members)."""
    spread = {}
    for c in range(num_classes):
        f = features[groups == c].double()
        if len(f) >= 2:
            spread[c] = (f - f.mean(0)).pow(2).sum(1).mean().sqrt().item()
    return spread


def _fid_batches(
    fid: FrechetInceptionDistance, images: np.ndarray, real: bool, batch_size: int, device: torch.device
) -> None:
    for start in range(0, len(images), batch_size):
        fid.update(to_input(images[start : start + batch_size]).to(device), real=real)


# what each classifier reads on its own (``member<i>_<key>`` with several); cond_acc first
MEMBER_KEYS = (
    "cond_acc",
    "fid",
    "fid_floor",
    "fid_ratio",
    "fid_recon",
    "fid_recon_ratio",
    "recon_acc",
    "classifier_acc",
    "diversity",
)


def evaluate_samples(
    images_uint8: Any,
    labels: Any,
    reference_images_uint8: Any,
    reference_labels: Any,
    classifier: DigitClassifier | Sequence[DigitClassifier],
    num_classes: int,
    real_floor_images_uint8: Any = None,
    batch_size: int = 500,
    min_samples: int = MIN_SAMPLES,
    seed: int = 0,
    real_floor_labels: Any = None,
    reconstruct: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Score generated digits against the held-out reference split.

    Args:
        images_uint8: ``(N, 28, 28)`` uint8 samples.
        labels: ``(N,)`` requested class per sample, -1 for unconditional ones.
        reference_images_uint8, reference_labels: the held-out (val) split.
        classifier: the evaluation classifier (see ``load_or_train_classifier``), or several trained
            the same way with different seeds: each figure is then their mean (see the module notes).
        num_classes: number of classes.
        real_floor_images_uint8: real *training* images; a seeded random subset
            of N of them gives ``fid_floor``.  ``None`` -> floor keys are None.
        seed: picks that subset.
        real_floor_labels: their labels (for ``recon_acc``).
        reconstruct: the run's stage 1, uint8 ``(N, 28, 28)`` -> encode -> decode -> uint8. The same
            real subset that gives the floor, reconstructed, is scored like the samples:
            ``fid_recon`` (the best FID this decoder allows) and ``recon_acc``; ``fid_recon_ratio`` is
            ``fid / fid_recon``. It tells whether stage 1 or stage 2 limits a run. (Reconstructions
            of the reference split itself would flatter: they would be compared with themselves.)

    Returns:
        dict with ``cond_acc`` and its 95 % interval ``cond_acc_low``, ``cond_acc_high`` (None without
        requested labels), ``per_class_acc``
        (list, None for never-requested classes), ``confusion_matrix`` (rows =
        requested label), ``fid``, ``fid_floor``, ``fid_ratio``, ``classifier_acc``
        (its accuracy on the reference split), ``diversity``, ``pred_histogram``,
        ``num_samples``, ``num_reference``, ``classifier_members``, and (with ``reconstruct``)
        ``fid_recon``, ``recon_acc``, ``fid_recon_ratio``, and ``misread``: each sample some classifier
        reads as another class than asked (:func:`tinyldm.evaluation.misreads.misreads`). With several classifiers, also
        ``member<i>_<key>`` for each of :data:`MEMBER_KEYS`; the confusion matrix and prediction
        histogram are then averaged over the members (floats).
    """
    classifiers = [classifier] if isinstance(classifier, nn.Module) else list(classifier)
    if not classifiers or not all(isinstance(c, nn.Module) for c in classifiers):
        raise ValueError(f"classifier: need one DigitClassifier or a non-empty sequence of them, got {classifier!r}")
    images, labels = validate_samples(images_uint8, labels, num_classes, min_samples=min_samples)
    ref_images, ref_labels = validate_samples(
        reference_images_uint8, reference_labels, num_classes, min_samples=min_samples, what="reference"
    )
    if (ref_labels < 0).any():
        raise ValueError("reference: labels must be real classes in [0, num_classes), not -1")
    n = len(images)
    if n <= classifiers[0].num_features:
        log.warning(
            "%d samples <= %d features: rank-deficient covariance, FID is biased upwards; compare FIDs only at equal N",
            n,
            classifiers[0].num_features,
        )
    floor = None  # (real subset (N, 28, 28), its labels or None, its reconstruction or None)
    if real_floor_images_uint8 is not None:
        floor_images, _ = validate_samples(
            real_floor_images_uint8, None, num_classes, min_samples=min_samples, what="real floor"
        )
        if len(floor_images) < n:
            log.warning("only %d real floor images for %d samples; the floor is biased upwards", len(floor_images), n)
        pick = np.sort(np.random.default_rng(seed).permutation(len(floor_images))[:n])
        real = floor_images[pick]
        reconstructed = None
        if reconstruct is not None:  # once, whatever the number of classifiers
            reconstructed = np.ascontiguousarray(reconstruct(real))
            if reconstructed.shape != real.shape or reconstructed.dtype != np.uint8:
                raise ValueError(
                    f"reconstruct must return uint8 {real.shape}, got {reconstructed.dtype} {reconstructed.shape}"
                )
        floor_labels = None if real_floor_labels is None else np.asarray(real_floor_labels)[pick]
        floor = (real, floor_labels, reconstructed)
    readings = [
        _evaluate_with(c, images, labels, ref_images, ref_labels, num_classes, floor, batch_size) for c in classifiers
    ]
    results = [result for result, _ in readings]
    combined = {**results[0], "classifier_members": 1} if len(results) == 1 else _combine_members(results)
    combined["misread"] = misreads(labels, [preds for _, preds in readings])
    return combined


def _evaluate_with(
    classifier: DigitClassifier,
    images: np.ndarray,
    labels: np.ndarray,
    ref_images: np.ndarray,
    ref_labels: np.ndarray,
    num_classes: int,
    floor: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None,
    batch_size: int,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Every figure of :func:`evaluate_samples` as read by one classifier (inputs already checked), and
    its ``(N,)`` reading of each sample."""
    n = len(images)
    device = next(classifier.parameters()).device
    feats, preds = predict(classifier, images, batch_size)  # (N, F), (N,)
    ref_feats, ref_preds = predict(classifier, ref_images, batch_size)
    labels_t, ref_labels_t = torch.from_numpy(labels), torch.from_numpy(ref_labels)

    result: dict[str, Any] = {"num_samples": n, "num_reference": len(ref_images)}
    result["classifier_acc"] = (ref_preds == ref_labels_t).double().mean().item()
    result["pred_histogram"] = torch.bincount(preds, minlength=num_classes).tolist()
    mask = labels_t >= 0
    if mask.any():
        confusion = MulticlassConfusionMatrix(num_classes)(preds[mask], labels_t[mask])  # (C, C)
        requested = confusion.sum(1)
        correct, asked = int((preds[mask] == labels_t[mask]).sum()), int(mask.sum())
        result["cond_acc"] = correct / asked
        result["cond_acc_low"], result["cond_acc_high"] = _wilson(correct, asked)
        result["per_class_acc"] = [
            (confusion[c, c] / requested[c]).item() if requested[c] else None for c in range(num_classes)
        ]
        result["confusion_matrix"] = confusion.tolist()
    else:
        result.update(cond_acc=None, cond_acc_low=None, cond_acc_high=None, per_class_acc=None, confusion_matrix=None)

    groups = torch.where(mask, labels_t, preds)  # requested class, else the predicted one
    sample_spread = _class_spread(feats, groups, num_classes)
    real_spread = _class_spread(ref_feats, ref_labels_t, num_classes)
    ratios = [sample_spread[c] / real_spread[c] for c in sample_spread if real_spread.get(c, 0.0) > 0]
    result["diversity"] = float(np.mean(ratios)) if ratios else None

    # sync_on_compute=False: one process scores its own samples; under DDP only rank zero evaluates,
    # and a sync would wait forever on ranks that are not computing this metric
    fid = FrechetInceptionDistance(
        feature=ClassifierFeatures(classifier), normalize=True, reset_real_features=False, sync_on_compute=False
    )
    fid = fid.to(device)
    _fid_batches(fid, ref_images, True, batch_size, device)
    _fid_batches(fid, images, False, batch_size, device)
    result["fid"] = max(0.0, float(fid.compute()))  # >= 0 in exact arithmetic; clip -1e-7 round-off
    result["fid_floor"] = result["fid_ratio"] = None
    if floor is not None:
        real, real_labels, reconstructed = floor
        fid.reset()  # keeps the reference statistics (reset_real_features=False)
        _fid_batches(fid, real, False, batch_size, device)
        result["fid_floor"] = max(0.0, float(fid.compute()))
        result["fid_ratio"] = _ratio(result["fid"], result["fid_floor"])
        if reconstructed is not None:
            result.update(
                _reconstruction_ceiling(fid, classifier, reconstructed, real_labels, batch_size, device, result["fid"])
            )
    result.setdefault("fid_recon", None)
    return result, preds


def _wilson(correct: int, asked: int) -> tuple[float, float]:
    interval = binomtest(correct, asked).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else float("inf")


def _mean(values: list[Any]) -> Any:
    """Mean of the members' figures; None where any member has none (the figure was not computed)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def _combine_members(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several classifiers' readings of the same samples: each figure their mean.

    Ratios are of the means (``fid_ratio = fid / fid_floor`` holds as for one classifier); the
    accuracy interval is the sampling interval at the mean number of correct samples, since the
    members read the same samples.
    """
    first = results[0]
    combined: dict[str, Any] = {
        "num_samples": first["num_samples"],
        "num_reference": first["num_reference"],
        "classifier_members": len(results),
    }
    for key in (k for k in MEMBER_KEYS if not k.endswith("_ratio")):  # the ratios are of these means, below
        combined[key] = _mean([r.get(key) for r in results])
    combined["fid_ratio"] = None if combined["fid_floor"] is None else _ratio(combined["fid"], combined["fid_floor"])
    if combined["fid_recon"] is not None:
        combined["fid_recon_ratio"] = _ratio(combined["fid"], combined["fid_recon"])
    combined["cond_acc_low"] = combined["cond_acc_high"] = None
    if combined["cond_acc"] is not None:
        asked = int(np.sum(first["confusion_matrix"]))
        combined["cond_acc_low"], combined["cond_acc_high"] = _wilson(round(combined["cond_acc"] * asked), asked)
    per_class = [r["per_class_acc"] for r in results]
    combined["per_class_acc"] = None if per_class[0] is None else [_mean(list(c)) for c in zip(*per_class, strict=True)]
    for key in ("confusion_matrix", "pred_histogram"):
        combined[key] = None if first[key] is None else np.mean([r[key] for r in results], axis=0).tolist()
    for i, r in enumerate(results):
        combined.update({f"member{i}_{key}": r.get(key) for key in MEMBER_KEYS})
    return combined


def _reconstruction_ceiling(
    fid: FrechetInceptionDistance,
    classifier: DigitClassifier,
    reconstructed: np.ndarray,
    labels: np.ndarray | None,
    batch_size: int,
    device: torch.device,
    sample_fid: float,
) -> dict[str, Any]:
    """FID and accuracy of the real floor subset after stage 1 (``reconstructed``), against the same reference."""
    fid.reset()
    _fid_batches(fid, reconstructed, False, batch_size, device)
    fid_recon = max(0.0, float(fid.compute()))
    out: dict[str, Any] = {"fid_recon": fid_recon, "fid_recon_ratio": _ratio(sample_fid, fid_recon), "recon_acc": None}
    if labels is not None:
        _, preds = predict(classifier, reconstructed, batch_size)
        out["recon_acc"] = (preds == torch.as_tensor(labels)).double().mean().item()
    return out
