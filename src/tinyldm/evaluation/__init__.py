"""Offline evaluation of generated digits: a cached digit classifier and metrics in its feature space.

Typical use::

    model, info = load_or_train_classifier("mnist_5k", datamodule, cache_dir)
    ref_images, ref_labels = dataset_arrays(datamodule.val_dataset, datamodule.pad)
    train_images, _ = dataset_arrays(datamodule.train_dataset, datamodule.pad)
    images, labels, meta = read_samples("samples.npz")  # tinyldm.samples_file
    scores = evaluate_samples(images, labels, ref_images, ref_labels, model,
                              datamodule.num_classes, real_floor_images_uint8=train_images)
"""

from tinyldm.evaluation.classifier import (
    DigitClassifier,
    dataset_arrays,
    load_or_train_classifier,
    predict,
    to_input,
    train_classifier,
)
from tinyldm.evaluation.metrics import (
    MEMBER_KEYS,
    MIN_SAMPLES,
    ClassifierFeatures,
    evaluate_samples,
    validate_samples,
)

__all__ = [
    "DigitClassifier",
    "ClassifierFeatures",
    "MEMBER_KEYS",
    "MIN_SAMPLES",
    "dataset_arrays",
    "evaluate_samples",
    "load_or_train_classifier",
    "predict",
    "to_input",
    "train_classifier",
    "validate_samples",
]
