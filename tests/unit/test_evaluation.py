"""Tests for tinyldm.evaluation: the cached digit classifier, FID/accuracy metrics and input checks.

The classifier is trained once per module (~30 s on one CPU thread) on the
bundled mnist_5k subset; every metric test reuses it.  Sanity anchors: real
held-out digits must score like the classifier itself, while noise, blank
images and shuffled labels must score like chance.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from tinyldm.data import DigitsDataModule
from tinyldm.evaluation import (
    MIN_SAMPLES,
    ClassifierFeatures,
    dataset_arrays,
    evaluate_samples,
    load_or_train_classifier,
    predict,
    to_input,
    validate_samples,
)
from tinyldm.samples_file import read_samples

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(datamodule, classifier, info, cache_dir, arrays) with the classifier trained once."""
    cache_dir = tmp_path_factory.mktemp("eval_cache")
    datamodule = DigitsDataModule(name="mnist_5k", source="bundled", seed=0)
    model, info = load_or_train_classifier("mnist_5k", datamodule, cache_dir)
    val_images, val_labels = dataset_arrays(datamodule.val_dataset, datamodule.pad)
    train_images, train_labels = dataset_arrays(datamodule.train_dataset, datamodule.pad)
    arrays = {"val": (val_images, val_labels), "train": (train_images, train_labels)}
    return datamodule, model, info, cache_dir, arrays


def _score(setup, images, labels, floor_seed=0):
    _, model, _, _, arrays = setup
    val_images, val_labels = arrays["val"]
    floor = arrays["train"][0][:2000]  # disjoint from the slices used as "samples" below
    return evaluate_samples(
        images, labels, val_images, val_labels, model, NUM_CLASSES, real_floor_images_uint8=floor, seed=floor_seed
    )


# --------------------------------------------------------------------------- classifier + cache


def test_classifier_is_accurate_and_cached(setup):
    _, _, info, cache_dir, _ = setup
    assert not info["reused"]
    assert info["val_accuracy"] >= 0.985, info
    assert (info["num_train"], info["num_val"]) == (4500, 500)
    assert info["cache_path"].startswith(str(cache_dir / "classifiers"))


def test_second_call_reuses_identical_weights(setup, caplog):
    datamodule, model, info, cache_dir, _ = setup
    caplog.set_level(logging.INFO, logger="tinyldm.evaluation")
    again, info2 = load_or_train_classifier("mnist_5k", datamodule, cache_dir)
    assert info2["reused"] and info2["cache_path"] == info["cache_path"]
    assert info2["val_accuracy"] == info["val_accuracy"]
    assert "reusing cached classifier" in caplog.text
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a.cpu(), b.cpu()), name


def test_truncated_train_split_shares_the_full_split_classifier(setup):
    """max_train_samples must not change the yardstick every run is measured with."""
    _, _, info, cache_dir, _ = setup
    small = DigitsDataModule(name="mnist_5k", source="bundled", seed=0, max_train_samples=100)
    _, info_small = load_or_train_classifier("mnist_5k", small, cache_dir)
    assert info_small["reused"] and info_small["key"] == info["key"]


def test_corrupt_cache_is_retrained_with_warning(tmp_path, caplog):
    # a 500-image train split and one epoch keep the two trainings here to a few seconds
    datamodule = DigitsDataModule(name="mnist_5k", source="bundled", seed=0, val_fraction=0.9)
    _, first = load_or_train_classifier("mnist_5k", datamodule, tmp_path, epochs=1)
    with open(first["cache_path"], "wb") as handle:
        handle.write(b"definitely not a torch file")
    with caplog.at_level(logging.WARNING, logger="tinyldm.evaluation"):
        _, second = load_or_train_classifier("mnist_5k", datamodule, tmp_path, epochs=1)
    assert not second["reused"]
    assert "unusable" in caplog.text and "retraining" in caplog.text
    _, third = load_or_train_classifier("mnist_5k", datamodule, tmp_path, epochs=1)
    assert third["reused"] and third["val_accuracy"] == second["val_accuracy"]


def test_classifier_features_plug_into_torchmetrics_fid(setup):
    _, model, _, _, arrays = setup
    module = ClassifierFeatures(model)
    assert isinstance(module.num_features, int) and module.num_features == model.num_features
    fid = FrechetInceptionDistance(feature=module, normalize=True)
    assert not module.training and not model.training  # BatchNorm must use running statistics
    x = to_input(arrays["val"][0][:8])  # (8, 1, 28, 28) float in [0, 1]
    assert module(x).shape == (8, model.num_features)
    fid.update(x, real=True)
    assert not model.training


# --------------------------------------------------------------------------- metrics


def test_real_heldout_split_scores_like_the_classifier(setup):
    _, _, info, _, arrays = setup
    images, labels = arrays["val"]
    result = _score(setup, images, labels)
    assert result["cond_acc"] == pytest.approx(info["val_accuracy"], abs=1e-6)
    assert result["classifier_acc"] == pytest.approx(info["val_accuracy"], abs=1e-6)
    assert result["fid"] < 0.05 * result["fid_floor"]  # identical to the reference set
    assert result["diversity"] == pytest.approx(1.0, abs=1e-6)
    confusion = np.array(result["confusion_matrix"])
    assert confusion.shape == (NUM_CLASSES, NUM_CLASSES) and confusion.sum() == len(images)
    assert np.trace(confusion) / len(images) == pytest.approx(result["cond_acc"])
    assert confusion.sum(axis=1).tolist() == np.bincount(labels, minlength=NUM_CLASSES).tolist()  # rows = requested
    assert len(result["per_class_acc"]) == NUM_CLASSES and min(result["per_class_acc"]) > 0.9
    assert sum(result["pred_histogram"]) == result["num_samples"] == len(images)


def test_conditional_accuracy_comes_with_its_95_percent_wilson_interval(setup):
    _, model, _, _, arrays = setup
    images, labels = arrays["train"]
    images, labels = images[2000:2600], labels[2000:2600]
    _, predicted = predict(model, images)
    # asked for what the classifier sees: every sample right, and Wilson's lower bound is n / (n + z^2)
    perfect = _score(setup, images, predicted.numpy())
    assert perfect["cond_acc"] == 1.0 and perfect["cond_acc_high"] == pytest.approx(1.0)
    assert perfect["cond_acc_low"] == pytest.approx(600 / (600 + 1.959964**2), abs=1e-6)
    # the real labels: a few wrong; the interval holds the estimate, and quarter the samples widen it
    real = _score(setup, images, labels)
    fewer = _score(setup, images[:150], labels[:150])
    assert real["cond_acc_low"] < real["cond_acc"] < real["cond_acc_high"] < 1.0
    assert 0.005 < real["cond_acc_high"] - real["cond_acc_low"] < fewer["cond_acc_high"] - fewer["cond_acc_low"]
    assert _score(setup, images, -np.ones_like(labels))["cond_acc_low"] is None  # unconditional: no accuracy


@pytest.mark.parametrize("seed", [0, 1])
def test_other_real_images_score_near_the_floor(setup, seed):
    images, labels = setup[4]["train"]
    part = slice(2000 + 500 * seed, 2500 + 500 * seed)
    result = _score(setup, images[part], labels[part], floor_seed=seed)
    assert 0.5 < result["fid_ratio"] < 2.0, result  # measured 0.84..1.14
    assert result["fid"] == pytest.approx(result["fid_ratio"] * result["fid_floor"])
    assert result["cond_acc"] > 0.97
    assert 0.8 < result["diversity"] < 1.2


def _noise(n):
    return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("make", [_noise, lambda n: np.zeros((n, 28, 28), np.uint8)], ids=["noise", "blank"])
def test_garbage_scores_like_chance(setup, make):
    labels = np.arange(500) % NUM_CLASSES
    result = _score(setup, make(500), labels)
    assert result["cond_acc"] < 0.3
    assert result["fid"] > 10 * result["fid_floor"]  # measured ~100x (blank) and ~400x (noise)


def test_mode_collapse_shows_in_diversity(setup):
    images, labels = setup[4]["train"]
    one_each = np.array([np.flatnonzero(labels == c)[0] for c in range(NUM_CLASSES)])
    result = _score(setup, np.repeat(images[one_each], 50, axis=0), np.repeat(labels[one_each], 50))
    assert result["cond_acc"] == 1.0  # perfect accuracy cannot reveal the collapse ...
    assert result["diversity"] < 0.05  # ... the spread can
    assert result["fid"] > 3 * result["fid_floor"]


def test_shuffled_labels_score_like_chance(setup):
    images, labels = setup[4]["val"]
    result = _score(setup, images, np.random.default_rng(0).permutation(labels))
    assert result["cond_acc"] < 0.3


def test_unconditional_samples_have_no_conditional_accuracy(setup):
    images, _ = setup[4]["train"]
    result = _score(setup, images[2000:2500], np.full(500, -1))
    assert result["cond_acc"] is None and result["confusion_matrix"] is None
    assert 0.8 < result["diversity"] < 1.2 and result["fid_ratio"] < 2.0


# --------------------------------------------------------------------------- input checks


def _valid(n=100):
    return _noise(n), np.arange(n) % NUM_CLASSES


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda x, y: (np.zeros((100, 32, 32), np.uint8), y),
            r"expected images of shape \(N, 28, 28\), got \(100, 32, 32\)",
        ),
        (lambda x, y: (x[:, None], y), r"got \(100, 1, 28, 28\); drop the channel axis"),
        (lambda x, y: (x.astype(np.float32) / 255, y), r"must be uint8 .* got float"),
        (lambda x, y: (np.where(np.eye(28, dtype=bool), np.nan, x / 255.0), y), r"NaN/Inf"),
        (lambda x, y: (x.astype(np.int64), y), r"must be uint8 .* got dtype int64"),
        (lambda x, y: (x, y[:50]), r"labels of shape \(100,\) .* got \(50,\)"),
        (lambda x, y: (x, y + 1), r"\[-1, 10\) .* e\.g\. 10"),
        (lambda x, y: (x, y - 2), r"\[-1, 10\) .* e\.g\. -2"),
        (lambda x, y: (x, y.astype(np.float32)), r"labels must be integers"),
        (lambda x, y: (x[:10], y[:10]), rf"at least {MIN_SAMPLES} images .* got 10"),
    ],
    ids=["32px", "channel", "float", "nan", "int64", "labels-len", "label-high", "label-low", "label-float", "too-few"],
)
def test_validate_samples_rejects_bad_input(change, match):
    images, labels = change(*_valid())
    with pytest.raises(ValueError, match=match):
        validate_samples(images, labels, NUM_CLASSES)


def test_validate_samples_accepts_tensors():
    images, labels = _valid()
    out_images, out_labels = validate_samples(torch.from_numpy(images), torch.from_numpy(labels).int(), NUM_CLASSES)
    assert out_images.dtype == np.uint8 and out_labels.dtype == np.int64


def test_read_samples_roundtrip_and_errors(tmp_path):
    images, labels = _valid()
    good = tmp_path / "samples.npz"
    np.savez(good, images=images, labels=labels, guidance_scale=np.float32(3.0), metadata='{"steps": 50}')
    got_images, got_labels, meta = read_samples(good)
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)
    assert meta == {"guidance_scale": 3.0, "steps": 50}

    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_samples(tmp_path / "missing.npz")
    np.savez(tmp_path / "nolabels.npz", images=images, extra=labels)
    with pytest.raises(ValueError, match=r"no 'labels' array; it contains \['extra', 'images'\]"):
        read_samples(tmp_path / "nolabels.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not an .npz archive"):
        read_samples(tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", images)
    with pytest.raises(ValueError, match="single .npy array"):
        read_samples(tmp_path / "single.npy")


# --------------------------------------------------------------------------- reconstruction ceiling


def test_identity_reconstruction_ceiling_equals_the_real_floor(setup):
    """model=identity reconstructs perfectly: its ceiling is exactly the real images' own score."""
    from functools import partial

    from tinyldm.autoencoders import IdentityAutoencoder
    from tinyldm.evaluation.score import reconstruct_uint8

    datamodule, model, _, _, arrays = setup
    val_images, val_labels = arrays["val"]
    train_images, train_labels = arrays["train"]
    samples, labels = train_images[-300:], train_labels[-300:]
    identity = partial(reconstruct_uint8, IdentityAutoencoder(in_channels=1), datamodule)
    result = evaluate_samples(
        samples,
        labels,
        val_images,
        val_labels,
        model,
        NUM_CLASSES,
        real_floor_images_uint8=train_images,
        real_floor_labels=train_labels,
        reconstruct=identity,
    )
    assert result["fid_recon"] == pytest.approx(result["fid_floor"], rel=1e-6)
    pick = np.sort(np.random.default_rng(0).permutation(len(train_images))[:300])  # the floor's subset
    real_accuracy = evaluate_samples(
        train_images[pick], train_labels[pick], val_images, val_labels, model, NUM_CLASSES
    )["cond_acc"]
    assert result["recon_acc"] == pytest.approx(real_accuracy)


def test_a_lossy_stage1_lowers_the_ceiling(setup):
    """Blurring every reconstruction (a poor decoder) shows up as a worse ceiling than the floor."""
    import torch.nn.functional as F

    datamodule, model, _, _, arrays = setup
    val_images, val_labels = arrays["val"]
    train_images, train_labels = arrays["train"]

    def blur(images):
        x = torch.from_numpy(images).float()[:, None]
        return F.avg_pool2d(x, 3, stride=1, padding=1)[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()

    result = evaluate_samples(
        train_images[-300:],
        train_labels[-300:],
        val_images,
        val_labels,
        model,
        NUM_CLASSES,
        real_floor_images_uint8=train_images,
        real_floor_labels=train_labels,
        reconstruct=blur,
    )
    assert result["fid_recon"] > 2 * result["fid_floor"]
    assert result["fid_recon_ratio"] == pytest.approx(result["fid"] / result["fid_recon"])
