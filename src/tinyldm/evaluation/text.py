"""Does a text model draw what its prompt asks? Class and attribute checks on held-out prompts.

The same attribute functions that labelled the training images (:mod:`tinyldm.text.attributes`)
measure the samples, binned at the training set's edges stored in the checkpoint, so "thick" means
here exactly what it meant in training. Four families of prompts:

* ``held_out_phrasings``: every class, in templates training never used ("the thick 7");
* ``held_out_combinations``: each held-out class-word pair ("7:thick") in training templates;
* ``seen``: training templates and combinations (the reference the two above are compared with);
* paired tests: the same seed (same initial noise) with "thin" and "thick" (and "slanted left" /
  "slanted right"); a pair passes when the measured attribute moves the way the words say.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tinyldm.diffusion import ClassifierFreeGuidance, Solver
from tinyldm.evaluation.classifier import DigitClassifier, load_or_train_classifier, predict
from tinyldm.text.attributes import ATTRIBUTES, measure, to_bins
from tinyldm.text.prompts import CLASS_ONLY_TEMPLATES, HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, PromptBank, Request
from tinyldm.utils.images import captioned_grid, grid_uint8

if TYPE_CHECKING:  # the pipeline is handed in; evaluation never builds one (code map: it sits above pipeline.py)
    from tinyldm.pipeline import LatentDiffusionPipeline

log = logging.getLogger(__name__)

#: attributes whose low and high words make a paired test ("thin" vs "thick")
PAIRED = ("thickness", "slant")


def requests(bank: PromptBank, n_per_class: int, seed: int = 0) -> dict[str, list[Request]]:
    """The prompts of each family: ``n_per_class`` per class (per held-out pair), asking 1-2 attributes."""
    rng = random.Random(seed)
    num_attributes = len(bank.attributes)

    def asked(label: int, must: dict[int, int] | None = None) -> dict[int, int]:
        if must:
            return dict(must)
        chosen = rng.sample(range(num_attributes), rng.randint(1, min(2, num_attributes)))
        bins = {}
        for a in chosen:  # a bin this class is ever described with in training
            options = [b for b in range(3) if (label, a, b) not in bank.held_out]
            bins[a] = rng.choice(options)
        return bins

    families: dict[str, list[Request]] = {"held_out_phrasings": [], "held_out_combinations": [], "seen": []}
    for label in range(bank.num_classes):
        for i in range(n_per_class):
            form = rng.randrange(8)
            families["held_out_phrasings"].append(
                bank.request(HELD_OUT_TEMPLATES[i % len(HELD_OUT_TEMPLATES)], label, asked(label), form)
            )
            families["seen"].append(bank.request(TRAIN_TEMPLATES[i % len(TRAIN_TEMPLATES)], label, asked(label), form))
    for label, attribute, bin_ in sorted(bank.held_out):
        for i in range(n_per_class):
            template = TRAIN_TEMPLATES[i % len(TRAIN_TEMPLATES)]
            families["held_out_combinations"].append(bank.request(template, label, {attribute: bin_}, i))
    return families


def paired_requests(bank: PromptBank, pairs_per_class: int) -> dict[str, tuple[list[Request], list[Request]]]:
    """For each paired attribute the model has: (low-word prompts, high-word prompts), one pair per slot."""
    out = {}
    for name in PAIRED:
        if name not in bank.attributes:
            continue
        a = bank.attribute_index(name)
        low, high = [], []
        for label in range(bank.num_classes):
            for i in range(pairs_per_class):
                template = TRAIN_TEMPLATES[i % len(TRAIN_TEMPLATES)]
                low.append(bank.request(template, label, {a: 0}, i))
                high.append(bank.request(template, label, {a: 2}, i))
        out[name] = (low, high)
    return out


def score_text(
    pipeline: LatentDiffusionPipeline,
    classifier: DigitClassifier,
    n_per_class: int = 20,
    pairs_per_class: int = 10,
    seed: int = 0,
    batch_size: int = 250,
    solver: Solver | None = None,
    guidance: ClassifierFreeGuidance | None = None,
) -> dict[str, Any]:
    """Text metrics of a text-conditioned pipeline (keys ``text/...``; accuracies in [0, 1]).

    Class accuracy is the evaluation classifier's agreement with the class each prompt names;
    attribute accuracy the fraction of asked attributes whose measured bin is the asked one
    (chance: 1/3). ``solver`` and ``guidance`` default to the pipeline's stored ones.
    """
    conditioner = pipeline.model.denoiser.conditioner
    bank: PromptBank = conditioner.bank
    thresholds = conditioner.attribute_thresholds()  # (A, 2)
    result: dict[str, Any] = {}

    def draw(family: Sequence[Request]) -> tuple[np.ndarray, torch.Tensor]:
        prompts = [r.prompt for r in family]
        images = pipeline.generate(prompts, solver=solver, guidance=guidance, seed=seed, batch_size=batch_size)
        pixels = pipeline.to_uint8(images)  # (N, 28, 28)
        return pixels, measure(torch.from_numpy(pixels), bank.attributes)  # (N, A) measured values

    for family, asked in requests(bank, n_per_class, seed).items():
        if not asked:
            continue
        pixels, values = draw(asked)
        _, predicted = predict(classifier, pixels)  # (N,)
        labels = torch.tensor([r.label for r in asked])
        result[f"text/{family}/class_acc"] = float((predicted == labels).float().mean())
        bins = to_bins(values, thresholds)  # (N, A)
        wanted = torch.tensor([r.bins for r in asked])  # (N, A), -1 = not asked
        for a, name in enumerate(bank.attributes):
            mask = wanted[:, a] >= 0
            if mask.any():
                result[f"text/{family}/{name}_acc"] = float((bins[mask, a] == wanted[mask, a]).float().mean())
        result[f"text/{family}/attribute_acc"] = float((bins[wanted >= 0] == wanted[wanted >= 0]).float().mean())
        result[f"text/{family}/num_samples"] = len(asked)
    for name, (low, high) in paired_requests(bank, pairs_per_class).items():
        a = bank.attribute_index(name)
        _, low_values = draw(low)
        _, high_values = draw(high)
        result[f"text/paired/{name}"] = float((high_values[:, a] > low_values[:, a]).float().mean())
        result[f"text/paired/{name}_pairs"] = len(low)
    result["text/chance_attribute_acc"] = 1 / 3
    return result


def text_metrics(
    pipeline: LatentDiffusionPipeline,
    datamodule: Any,
    evaluation: Any,
    cache_dir: str | Path,
    seed: int,
    solver: Solver | None = None,
    guidance: ClassifierFreeGuidance | None = None,
) -> dict[str, Any]:
    """:func:`score_text` with the dataset's cached evaluation classifier and ``evaluation.text`` sizes."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    datamodule.setup()
    classifier, _ = load_or_train_classifier(
        datamodule.name, datamodule, cache_dir, epochs=evaluation.classifier_epochs, device=device
    )
    result = score_text(
        pipeline,
        classifier,
        n_per_class=int(evaluation.text.n_per_class),
        pairs_per_class=int(evaluation.text.pairs_per_class),
        seed=seed,
        batch_size=int(evaluation.batch_size),
        solver=solver,
        guidance=guidance,
    )
    log.info("\n%s", format_text_table(result))
    return result


def format_text_table(result: dict[str, Any]) -> str:
    """The text metrics as a small table: one row per family, one column per measure."""
    lines = ["text prompts", "------------"]
    for key in sorted(k for k in result if not k.endswith(("num_samples", "_pairs"))):
        value = result[key]
        lines.append(f"{key:<46}{value:.4f}" if isinstance(value, float) else f"{key:<46}{value}")
    return "\n".join(lines)


def prompt_grid(
    pipeline: LatentDiffusionPipeline,
    attributes: Sequence[str] | None = None,
    per_cell: int = 1,
    seed: int = 0,
    guidance: ClassifierFreeGuidance | None = None,
) -> np.ndarray:
    """(H', W', 3) uint8: rows = classes, columns = "class only" and each attribute's words, captioned
    (``attributes``: those of the prompt bank to show; None: all of them).

    Slot k of every cell starts from the same noise as slot k of the other cells in its row, so along a
    row only the words change.
    """
    bank: PromptBank = pipeline.model.denoiser.conditioner.bank
    shown = bank.attributes if attributes is None else [name for name in attributes if name in bank.attributes]
    columns, prompts = grid_prompts(bank, shown)
    cells = []
    for column in prompts:  # the same seed per column: (class, k) starts from the same noise in every column
        asked = [prompt for prompt in column for _ in range(per_cell)]
        cells.append(pipeline.generate(asked, guidance=guidance, seed=seed).unflatten(0, (len(column), per_cell)))
    images = torch.stack(cells, dim=1).flatten(0, 2)  # (classes * columns * per_cell, 1, H, W), row = class
    grid = grid_uint8(images, nrow=len(columns) * per_cell, pad=int(pipeline.model.hparams.image_pad))
    return captioned_grid(grid, list(prompts[0]), column_captions=columns)


def grid_prompts(bank: PromptBank, attributes: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Prompts for a class x word grid: column words ("class only", then each attribute's three words)
    and, per column, one prompt per class ("a 7", "a thick 7", ...)."""
    columns, prompts = (
        ["class only"],
        [[bank.request(CLASS_ONLY_TEMPLATES[1], c, {}).prompt for c in range(bank.num_classes)]],
    )
    for name in attributes:
        a = bank.attribute_index(name)
        for b, word in enumerate(ATTRIBUTES[name].words):
            columns.append(word)
            prompts.append([bank.request(TRAIN_TEMPLATES[0], c, {a: b}).prompt for c in range(bank.num_classes)])
    return columns, prompts
