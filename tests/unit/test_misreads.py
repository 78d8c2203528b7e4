"""The samples the evaluation classifier(s) read as another class than asked, and their picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyldm.evaluation.misreads import MAX_PER_ROW, misread_grid, misreads, save_misread_grid


def test_one_classifier_lists_exactly_its_wrong_readings():
    labels = np.array([0, 1, 2, 3, -1, 5])
    preds = torch.tensor([0, 7, 2, 8, 4, 5])  # wrong at 1 and 3; index 4 asked nothing
    assert misreads(labels, [preds]) == [
        {"index": 1, "asked": 1, "read": 7, "votes": 1},
        {"index": 3, "asked": 3, "read": 8, "votes": 1},
    ]


def test_several_classifiers_vote_and_the_most_wrong_come_first():
    labels = np.array([3, 3, 5, 9])
    preds = [
        np.array([8, 3, 6, 9]),
        np.array([8, 5, 0, 9]),
        np.array([5, 3, 0, 9]),
    ]
    # sample 0: all three wrong, read 8 twice; sample 2: all three wrong, read 0 twice; sample 1: one vote
    assert misreads(labels, preds) == [
        {"index": 0, "asked": 3, "read": 8, "votes": 3},
        {"index": 2, "asked": 5, "read": 0, "votes": 3},
        {"index": 1, "asked": 3, "read": 5, "votes": 1},
    ]
    tie = misreads(np.array([1]), [np.array([7]), np.array([4])])  # one vote each: the lower class
    assert tie == [{"index": 0, "asked": 1, "read": 4, "votes": 2}]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one classifier"):
        misreads(np.array([1, 2]), [])
    with pytest.raises(ValueError, match="3 predictions per classifier for 2 labels"):
        misreads(np.array([1, 2]), [np.array([1, 2, 3])])


def test_grid_draws_the_majority_misreads_one_row_per_pair():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    misread = [{"index": i, "asked": 3, "read": 8, "votes": 3} for i in range(12)]  # 12 of one pair: 10 drawn
    misread += [{"index": 12, "asked": 5, "read": 0, "votes": 2}]  # a minority of 5: left out
    misread += [{"index": 13, "asked": 7, "read": 9, "votes": 4}]
    grid = misread_grid(images, misread, members=5)
    assert grid is not None and grid.dtype == np.uint8 and grid.ndim == 3
    # two rows of 28-px cells with 2-px gaps, drawn at scale 2: (2 + 2 * 30) * 2 px high
    assert grid.shape[0] == (2 + 2 * 30) * 2
    assert grid.shape[1] > MAX_PER_ROW * 30 * 2  # ten cells per row, plus the captions' margin
    # the first cell is sample 0 itself (nearest-neighbour enlarged, at the right edge of the captions)
    cells_left = grid.shape[1] - (2 + MAX_PER_ROW * 30) * 2
    first = grid[4 : 4 + 56 : 2, cells_left + 4 : cells_left + 4 + 56 : 2, 0]
    assert np.array_equal(first, images[0])
    assert misread_grid(images, misread[12:13], members=5) is None  # nothing a majority misreads


def test_save_writes_nothing_without_misreads(tmp_path):
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    assert save_misread_grid(images, [], 1, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    path = save_misread_grid(images, [{"index": 2, "asked": 1, "read": 7, "votes": 1}], 1, tmp_path / "one.png")
    assert path == tmp_path / "one.png" and path.stat().st_size > 0
