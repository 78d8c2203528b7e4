"""Evaluation-classifier benchmark: accuracy, training time and the FID scale it implies.

    python scripts/bench_classifier.py [--dataset mnist_5k] [--split-seeds 0 1 2] [--epochs N] [--json]

For each split seed it trains the classifier from scratch (no cache), then scores reference
cases against the held-out split so one can read what FID numbers mean in this feature space:
real training images (the floor a perfect generator reaches), one image per class repeated
(mode collapse), blank images and uniform noise.  Prints a Markdown table (JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tinyldm.data import DigitsDataModule
from tinyldm.evaluation import dataset_arrays, evaluate_samples, train_classifier


def bench_split(dataset: str, root: str | None, source: str, seed: int, epochs: int | None, n: int) -> dict:
    datamodule = DigitsDataModule(name=dataset, root=root, source=source, seed=seed)
    datamodule.setup()
    train_images, train_labels = dataset_arrays(datamodule.train_dataset, datamodule.pad)
    val_images, val_labels = dataset_arrays(datamodule.val_dataset, datamodule.pad)
    start = time.perf_counter()
    model, accuracy = train_classifier(
        train_images, train_labels, val_images, val_labels, epochs=epochs, num_classes=datamodule.num_classes
    )
    row = {"split_seed": seed, "classifier_acc": accuracy, "train_seconds": time.perf_counter() - start}

    # real "samples" come from the second half of the train split, the floor from the first half
    half = len(train_images) // 2
    n = min(n, len(val_images), len(train_images) - half)
    labels = np.arange(n) % datamodule.num_classes
    one_each = np.array([np.flatnonzero(train_labels == c)[0] for c in range(datamodule.num_classes)])
    cases = {
        "real": (train_images[half : half + n], train_labels[half : half + n]),
        "collapse": (train_images[one_each[labels]], labels),
        "blank": (np.zeros((n, 28, 28), np.uint8), labels),
        "noise": (np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8), labels),
    }
    for name, (images, requested) in cases.items():
        result = evaluate_samples(
            images,
            requested,
            val_images,
            val_labels,
            model,
            datamodule.num_classes,
            real_floor_images_uint8=train_images[:half],
            seed=seed,
        )
        row["fid_floor"] = result["fid_floor"]
        row[f"{name}_fid"], row[f"{name}_cond_acc"] = result["fid"], result["cond_acc"]
        row[f"{name}_diversity"] = result["diversity"]
    row["num_samples"] = n
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist_5k")
    parser.add_argument("--root", default=None, help="folder with the IDX files (not needed for mnist_5k)")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--split-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: about 45k training images seen")
    parser.add_argument("--num-samples", type=int, default=500, help="images per scored case (FID depends on N)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rows = [
        bench_split(args.dataset, args.root, args.source, s, args.epochs, args.num_samples) for s in args.split_seeds
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    columns = [
        "split_seed",
        "classifier_acc",
        "train_seconds",
        "fid_floor",
        "real_fid",
        "collapse_fid",
        "collapse_diversity",
        "blank_fid",
        "noise_fid",
        "noise_cond_acc",
    ]
    print(f"{args.dataset}, {rows[0]['num_samples']} images per case\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
