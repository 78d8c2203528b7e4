"""Which samples the evaluation classifier(s) read as another class than the one asked, and a picture of them.

Why: conditional accuracy is one number, and near 99.5 % it is decided by five samples in 1,000.
Whether those are malformed scribbles (a stage-2 problem: train longer, guide harder) or plausible
digits between two classes (what the data themselves contain, and what more guidance trades
variety for) decides what to try next, and only looking at them tells. With several classifiers
(``evaluation.classifier_members``) each sample gets the votes of all of them: a sample one
classifier misreads and four read right is the instrument's doubt, not the model's error.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tinyldm.utils.images import captioned_grid, grid_uint8, save_png

__all__ = ["majority", "misreads", "misread_grid", "save_misread_grid"]

MAX_PER_ROW = 10


def majority(members: int) -> int:
    """Votes a sample needs to count as misread by the classifiers together: half of them, rounded up."""
    return math.ceil(members / 2)


def misreads(labels: np.ndarray, predictions: Sequence[torch.Tensor | np.ndarray]) -> list[dict[str, int]]:
    """Every sample some classifier reads as another class than asked.

    ``labels``: ``(N,)`` the class asked (-1: none, never counted); ``predictions``: one ``(N,)`` per
    classifier. Returns ``{"index", "asked", "read", "votes"}`` per such sample, ``read`` being the
    wrong class read most often and ``votes`` how many classifiers read a wrong class, most votes first
    (then by index).
    """
    if not predictions:
        raise ValueError("misreads: need the predictions of at least one classifier")
    labels = np.asarray(labels)
    preds = np.stack([np.asarray(p) for p in predictions])  # (K, N)
    if preds.shape[1] != len(labels):
        raise ValueError(f"misreads: {preds.shape[1]} predictions per classifier for {len(labels)} labels")
    wrong = (preds != labels[None, :]) & (labels[None, :] >= 0)  # (K, N)
    out = []
    for index in np.flatnonzero(wrong.any(axis=0)):
        votes = Counter(int(p) for p in preds[wrong[:, index], index])
        read = min(votes, key=lambda c: (-votes[c], c))  # the most common wrong class; ties: the lowest
        votes_wrong = int(wrong[:, index].sum())
        out.append({"index": int(index), "asked": int(labels[index]), "read": read, "votes": votes_wrong})
    return sorted(out, key=lambda m: (-m["votes"], m["index"]))


def misread_grid(images_uint8: np.ndarray, misread: list[dict[str, int]], members: int) -> np.ndarray | None:
    """The samples a majority of the ``members`` classifiers misread, one row per (asked, read) pair.

    ``images_uint8``: the ``(N, 28, 28)`` samples the indices refer to. Rows are captioned "asked 8,
    read 5: 3" (the number of such samples; at most :data:`MAX_PER_ROW` are drawn per row), most
    frequent pair first; empty cells are white. None when no sample is misread by a majority.
    """
    need = majority(members)
    groups: dict[tuple[int, int], list[int]] = {}
    for m in misread:
        if m["votes"] >= need:
            groups.setdefault((m["asked"], m["read"]), []).append(m["index"])
    if not groups:
        return None
    rows = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    columns = min(MAX_PER_ROW, max(len(indices) for _, indices in rows))
    blank = torch.ones(1, 28, 28)  # white in [-1, 1]: not a sample (their background is black)
    cells, captions = [], []
    for (asked, read), indices in rows:
        pixels = torch.tensor(images_uint8[indices[:columns]], dtype=torch.float32)  # (n, 28, 28) in 0..255
        shown = list(pixels.div(127.5).sub(1.0).unsqueeze(1))  # n of (1, 28, 28) in [-1, 1]
        cells += shown + [blank] * (columns - len(shown))
        captions.append(f"asked {asked}, read {read}: {len(indices)}")
    grid = grid_uint8(torch.stack(cells), nrow=columns)  # (H, W, 3)
    return captioned_grid(grid, captions)


def save_misread_grid(
    images_uint8: np.ndarray, misread: list[dict[str, int]], members: int, path: str | Path
) -> Path | None:
    """Write :func:`misread_grid` to ``path`` (atomically); None, and nothing written, when there is none."""
    grid = misread_grid(images_uint8, misread, members)
    return None if grid is None else save_png(grid, path)
