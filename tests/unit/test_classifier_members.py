"""Several evaluation classifiers read one set of samples: each figure is their mean, each member's beside it.

Two quickly trained classifiers (one epoch each, seeds 0 and 1) of the bundled digits read real
held-out-like images; the combined result must be exactly what averaging their separate
evaluations gives, one classifier must give the single-classifier result unchanged, and bad
values are refused.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyldm.data import DigitsDataModule
from tinyldm.evaluation import MEMBER_KEYS, dataset_arrays, evaluate_samples, load_or_train_classifier
from tinyldm.evaluation.score import format_table, score

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("members_cache")
    datamodule = DigitsDataModule(name="mnist_5k", source="bundled", seed=0)
    models = [load_or_train_classifier("mnist_5k", datamodule, cache_dir, epochs=1, seed=i)[0] for i in (0, 1)]
    val = dataset_arrays(datamodule.val_dataset, datamodule.pad)
    train = dataset_arrays(datamodule.train_dataset, datamodule.pad)
    return datamodule, models, cache_dir, val, train


def _noisy(images: np.ndarray) -> np.ndarray:
    """A stand-in stage 1: the images with a fixed pattern of pixel noise (not the identity, so recon FID > 0)."""
    noise = np.random.default_rng(0).integers(-40, 41, images.shape)
    return np.clip(images.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def _evaluate(members, classifier, reconstruct=None):
    _, _, _, (val_images, val_labels), (train_images, train_labels) = members
    samples, labels = train_images[2000:2300], train_labels[2000:2300]  # "samples": real digits, not in the floor
    return evaluate_samples(
        samples,
        labels,
        val_images,
        val_labels,
        classifier,
        NUM_CLASSES,
        real_floor_images_uint8=train_images[:2000],
        real_floor_labels=train_labels[:2000],
        reconstruct=reconstruct,
    )


def test_each_figure_is_the_mean_of_the_members_own(members):
    models = members[1]
    alone = [_evaluate(members, m, _noisy) for m in models]
    both = _evaluate(members, models, _noisy)
    assert both["classifier_members"] == 2 and all(a["classifier_members"] == 1 for a in alone)
    assert alone[0]["fid"] != pytest.approx(alone[1]["fid"], rel=1e-3)  # two different instruments
    for key in ("cond_acc", "fid", "fid_floor", "fid_recon", "recon_acc", "classifier_acc", "diversity"):
        assert both[key] == pytest.approx(np.mean([a[key] for a in alone]), rel=1e-9), key
    assert both["fid_ratio"] == pytest.approx(both["fid"] / both["fid_floor"])
    assert both["fid_recon_ratio"] == pytest.approx(both["fid"] / both["fid_recon"])
    for i, a in enumerate(alone):
        for key in MEMBER_KEYS:
            assert both[f"member{i}_{key}"] == pytest.approx(a[key], rel=1e-9), (i, key)
    np.testing.assert_allclose(
        both["confusion_matrix"], np.mean([a["confusion_matrix"] for a in alone], axis=0), rtol=1e-12
    )
    assert sum(both["pred_histogram"]) == pytest.approx(both["num_samples"])
    assert both["cond_acc_low"] <= both["cond_acc"] <= both["cond_acc_high"]


def test_one_classifier_in_a_list_is_the_plain_evaluation(members):
    model = members[1][0]
    assert _evaluate(members, [model]) == _evaluate(members, model)


def test_the_same_classifier_twice_changes_nothing_but_adds_member_keys(members):
    model = members[1][0]
    alone, twice = _evaluate(members, model), _evaluate(members, [model, model])
    for key in ("cond_acc", "fid", "fid_floor", "fid_ratio", "diversity", "classifier_acc"):
        assert twice[key] == pytest.approx(alone[key], rel=1e-9), key
    assert twice["member0_fid"] == twice["member1_fid"]


def test_stage_1_reconstructs_once_whatever_the_number_of_members(members):
    calls = []

    def reconstruct(images):
        calls.append(len(images))
        return _noisy(images)

    _evaluate(members, members[1], reconstruct)
    assert calls == [300]


def test_no_classifier_is_refused(members):
    with pytest.raises(ValueError, match="classifier: need one DigitClassifier or a non-empty sequence"):
        _evaluate(members, [])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_score_refuses_a_bad_number_of_members_before_any_work(members, bad, tmp_path):
    datamodule = members[0]
    images = np.zeros((60, 28, 28), np.uint8)
    with pytest.raises(ValueError, match=r"classifier_members=.* is not allowed: it must be an integer >= 1"):
        score(images, np.zeros(60, np.int64), datamodule, tmp_path / "never_written", classifier_members=bad)
    assert not (tmp_path / "never_written").exists()


def test_score_trains_members_with_seeds_and_reuses_the_first_as_the_single_classifier(members):
    datamodule, models, cache_dir, _, (train_images, train_labels) = members
    images, labels = train_images[2000:2300], train_labels[2000:2300]
    both = score(images, labels, datamodule, cache_dir, classifier_epochs=1, classifier_members=2)
    one = score(images, labels, datamodule, cache_dir, classifier_epochs=1)
    assert both["member0_fid"] == pytest.approx(one["fid"], rel=1e-12)  # member 0 is the one-classifier reading
    assert both["member1_fid"] != pytest.approx(one["fid"], rel=1e-3)
    table = format_table(both)
    assert "classifier_members    2" in table and "(members " in table
    assert "(members " not in format_table(one)
    assert "read by one classifier" in format_table(one) and "read by one classifier" not in table
