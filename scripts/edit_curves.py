"""What each edit does to real digits, measured: image-to-image's trade-off, inpainting, interpolation, negatives.

    python scripts/edit_curves.py CKPT OUT_DIR [--per-class 50] [--seed 0] [--strengths 0 0.2 0.4 0.6 0.8 1]
        [--text-ckpt TEXT_CKPT] [--set dataset=mnist dataset.source=bundled ...]

The sources are the first ``--per-class`` held-out digits of each class of the dataset ``--set`` composes (as
``edit.py source=heldout`` takes them), and every figure is read by that dataset's evaluation classifier (cached
in ``paths.cache_dir``, as the evaluation's). Everything is drawn with the checkpoint's own solver and guidance.

* **img2img**: each source redrawn as the next class, ``(c + 1) mod 10``, at each strength: the share read as
  that class, SSIM to the source, and the distance to the source in the classifier's features, beside the
  same distance between two real digits of different classes (``img2img.csv``, ``img2img.png``).
* **inpaint**: each mask drawn anew under the source's own class: the share read as that class, and PSNR of
  the kept pixels against the source beside the autoencoder's own reconstruction's (``inpaint.csv``).
* **interpolate**: a strip of 11 from class ``c`` to ``c + 1`` per class: where along it the classifier's
  reading turns to the end's class, and how evenly the features move (the largest step over the mean one;
  1 is perfectly even) (``interpolate.csv``).
* **negative**: each class drawn plainly and with the next class as its negative: the share read as the
  negated class and the classifier's mean probability of it (``negative.csv``); with ``--text-ckpt``, also
  "a digit" against "a digit" with negative "seven" (the share of sevens) and "a seven" with negative "thick"
  (the measured stroke thickness) (``negative_text.csv``).

One grid per mode goes beside the tables (``grid_<mode>.png``); the tables are printed as markdown too.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tinyldm.evaluation.classifier import load_or_train_classifier, predict
from tinyldm.masks import parse_mask
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.text.attributes import measure
from tinyldm.utils.files import write_text
from tinyldm.utils.images import from_uint8, grid_uint8, save_png, to_uint8
from tinyldm.utils.instantiate import build

REPO = Path(__file__).resolve().parents[1]
MASKS = ("bottom_half", "top_half", "left_half", "right_half", "box:7,7,21,21")
STRIP = 11


def held_out(overrides: list[str], per_class: int) -> tuple[np.ndarray, np.ndarray, Any, str]:
    """The first ``per_class`` held-out digits of each class, their labels, the datamodule and the cache dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="edit", overrides=["ckpt=unused", "mode=img2img", *overrides])
    datamodule = build(cfg.dataset)
    datamodule.setup("fit")
    images, labels = datamodule.val_dataset.tensors  # (M, 1, S, S), (M,)
    chosen = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(datamodule.num_classes)])
    return to_uint8(images[chosen], datamodule.pad), labels[chosen].numpy(), datamodule, str(cfg.paths.cache_dir)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM of two uint8 (N, 28, 28) stacks (torchmetrics' Gaussian-window SSIM on [0, 1])."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, y = (torch.from_numpy(v).float()[:, None] / 255.0 for v in (a, b))  # (N, 1, 28, 28) each
    return structural_similarity_index_measure(x, y, data_range=1.0, reduction="none").numpy()


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """PSNR (dB) of ``a`` against ``b`` over the pixels ``region`` (28, 28) bool, all images together."""
    diff = (a.astype(np.float64) - b.astype(np.float64))[:, region] / 255.0
    mse = float((diff**2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731 - a table cell
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows])


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", help="a class-conditional stage-2 checkpoint (checkpoints/diffusion.ckpt of a run)")
    parser.add_argument("out", type=Path, help="folder for the CSVs and pictures (created; must be new)")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    parser.add_argument("--text-ckpt", help="a text checkpoint (mnist_text) for the negative-prompt figures")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="dataset / paths overrides")
    args = parser.parse_args()
    if args.per_class < 1 or any(not 0 <= s <= 1 for s in args.strengths):
        raise SystemExit("--per-class must be >= 1 and every --strengths value in [0, 1]")
    args.out.mkdir(parents=True, exist_ok=False)
    pipeline = LatentDiffusionPipeline.from_checkpoint(args.ckpt)
    if pipeline.takes_prompts or not pipeline.model.is_conditional:
        raise SystemExit(f"{args.ckpt}: a class-conditional checkpoint is needed (use --text-ckpt for a text one)")
    sources, labels, datamodule, cache = held_out(args.set, args.per_class)
    classifier, _ = load_or_train_classifier(datamodule.name, datamodule, cache)
    num_classes, pad = datamodule.num_classes, int(pipeline.model.hparams.image_pad)
    source_features, _ = predict(classifier, sources)  # (N, F)
    report = []

    # image-to-image: towards the next class, at each strength
    targets = torch.from_numpy((labels + 1) % num_classes)
    other = torch.from_numpy(np.roll(np.arange(len(labels)), args.per_class))  # a real digit of another class
    reference = float((source_features - source_features[other]).norm(dim=1).mean())
    rows, shown = [], []
    for strength in args.strengths:
        edited = pipeline.to_uint8(pipeline.img2img(sources, targets, strength, seed=args.seed))
        features, read = predict(classifier, edited)
        rows.append(
            {
                "strength": strength,
                "target_acc": float((read == targets).float().mean()),
                "source_acc": float((read == torch.from_numpy(labels)).float().mean()),
                "ssim_to_source": float(ssim(edited, sources).mean()),
                "feature_distance": float((features - source_features).norm(dim=1).mean()),
                "real_pair_distance": reference,
            }
        )
        shown.append(from_uint8(edited[:: args.per_class], pad))  # one per class
    write_csv(args.out / "img2img.csv", rows)
    save_png(
        grid_uint8(torch.cat([from_uint8(sources[:: args.per_class], pad), *shown]), num_classes, pad),
        args.out / "grid_img2img.png",
    )
    plot_img2img(rows, args.out / "img2img.png")
    report.append("### img2img (towards the next class)\n\n" + table(rows))

    # inpainting, per mask, under the source's own class
    reconstruction = pipeline.to_uint8(pipeline.model.decode_latents(pipeline.encode(sources)).cpu())
    rows, shown = [], [from_uint8(sources[:: args.per_class], pad)]
    for spec in MASKS:
        mask = parse_mask(spec)
        filled = pipeline.to_uint8(pipeline.inpaint(sources, mask, torch.from_numpy(labels), seed=args.seed))
        _, read = predict(classifier, filled)
        rows.append(
            {
                "mask": spec,
                "class_acc": float((read == torch.from_numpy(labels)).float().mean()),
                "psnr_kept_db": psnr(filled, sources, ~mask),
                "reconstruction_psnr_kept_db": psnr(reconstruction, sources, ~mask),
            }
        )
        shown.append(from_uint8(filled[:: args.per_class], pad))
    write_csv(args.out / "inpaint.csv", rows)
    save_png(grid_uint8(torch.cat(shown), num_classes, pad), args.out / "grid_inpaint.png")
    report.append("### inpaint (the source's own class)\n\n" + table(rows))

    # interpolation from each class to the next
    rows, strips = [], []
    for c in range(num_classes):
        end = (c + 1) % num_classes
        strip = pipeline.interpolate(c, end, STRIP, seed=args.seed + c)
        features, read = predict(classifier, pipeline.to_uint8(strip))
        steps = (features[1:] - features[:-1]).norm(dim=1)
        turned = [i for i in range(STRIP) if int(read[i]) == end]
        rows.append(
            {
                "from": c,
                "to": end,
                "turns_at": turned[0] / (STRIP - 1) if turned else float("nan"),
                "reads_start_at_start": bool(int(read[0]) == c),
                "reads_end_at_end": bool(int(read[-1]) == end),
                "max_over_mean_step": float(steps.max() / steps.mean()),
            }
        )
        strips.append(strip)
    write_csv(args.out / "interpolate.csv", rows)
    save_png(grid_uint8(torch.cat(strips), STRIP, pad), args.out / "grid_interpolate.png")
    report.append("### interpolate (class c to c + 1, 11 images)\n\n" + table(rows))

    # negative classes: the next class negated
    rows, shown = [], []
    asked = torch.arange(num_classes).repeat_interleave(args.per_class)  # (N,)
    for c in range(num_classes):
        negated = (c + 1) % num_classes
        wanted = asked[asked == c]
        plain = pipeline.to_uint8(pipeline.generate(wanted, seed=args.seed))
        steered = pipeline.to_uint8(pipeline.generate(wanted, negative=negated, seed=args.seed))
        row: dict[str, Any] = {"class": c, "negative": negated}
        for name, images in (("plain", plain), ("negative", steered)):
            features, read = predict(classifier, images)
            probability = torch.softmax(classifier.head(features.to(next(classifier.parameters()).device)), 1)
            row[f"{name}_reads_negated"] = float((read == negated).float().mean())
            row[f"{name}_p_negated"] = float(probability[:, negated].mean())
            row[f"{name}_class_acc"] = float((read == c).float().mean())
        rows.append(row)
        shown += [from_uint8(plain[:8], pad), from_uint8(steered[:8], pad)]
    write_csv(args.out / "negative.csv", rows)
    save_png(grid_uint8(torch.cat(shown), 8, pad), args.out / "grid_negative.png")
    report.append("### negative class (the next class negated)\n\n" + table(rows))

    if args.text_ckpt:
        report.append(negative_prompts(LatentDiffusionPipeline.from_checkpoint(args.text_ckpt), classifier, args))
    text = "\n\n".join(report) + "\n"
    write_text(args.out / "tables.md", text)
    print(text)


@torch.no_grad()
def negative_prompts(pipeline: LatentDiffusionPipeline, classifier: Any, args: argparse.Namespace) -> str:
    """The text model's two negative-prompt figures: sevens among "a digit", thickness of "a seven"."""
    n = args.per_class * 10
    rows = []
    for prompt, negative in (("a digit", "seven"), ("a seven", "thick")):
        row: dict[str, Any] = {"prompt": prompt, "negative": negative}
        for name, neg in (("plain", None), ("negative", negative)):
            images = pipeline.to_uint8(pipeline.generate([prompt] * n, negative=neg, seed=args.seed))
            _, read = predict(classifier, images)
            row[f"{name}_sevens"] = float((read == 7).float().mean())
            row[f"{name}_thickness"] = float(measure(torch.from_numpy(images), ["thickness"])[:, 0].mean())
        rows.append(row)
    write_csv(args.out / "negative_text.csv", rows)
    return "### negative prompts (text model)\n\n" + table(rows)


def plot_img2img(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strengths = [r["strength"] for r in rows]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(strengths, [r["target_acc"] for r in rows], marker="o", label="read as the target class")
    ax.plot(strengths, [r["ssim_to_source"] for r in rows], marker="s", label="SSIM to the source")
    ax.set_xlabel("strength")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title("image-to-image: towards the next class")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    main()
