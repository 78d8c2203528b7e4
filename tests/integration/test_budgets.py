"""Stage lengths are optimizer steps: the same on 5,000 images as on 60,000, in both stages."""

from __future__ import annotations

import numpy as np
import pytest

from tinyldm.data import sources, write_idx

STEPS = [
    "model.training.max_steps=6",
    "model.training.max_epochs=null",
    "diffusion.max_steps=5",
    "diffusion.max_epochs=null",
    "diffusion.val_every_n_steps=5",
    "dataset.max_train_samples=null",
    "debug=smoke",
    "logger=none",
    "trainer.limit_val_batches=1",
    "diffusion.grid.samples_per_class=1",
    "evaluation.enabled=false",
    "diffusion.grid.every_n_steps=0",
]


def _write_60k_mnist(root):
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte", rng.integers(0, 256, (60_000, 28, 28), dtype=np.uint8))
    write_idx(root / "train-labels-idx1-ubyte", (np.arange(60_000) % 10).astype(np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 256, (100, 28, 28), dtype=np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte", (np.arange(100) % 10).astype(np.uint8))


@pytest.mark.parametrize("data", ["5k", "60k"])
def test_both_stages_run_their_step_budget_whatever_the_dataset_size(compose, tmp_path, monkeypatch, data):
    from tinyldm.tasks import train

    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"mnist": [], "fashion_mnist": []})
    if data == "60k":
        _write_60k_mnist(tmp_path / "idx")
        dataset = ["dataset=mnist", "dataset.source=local", f"dataset.root={tmp_path / 'idx'}"]
    else:
        dataset = ["dataset=mnist_5k"]
    # stage 1 alone with a (small) autoencoder; stage 2 on pixels (model=identity: nothing to encode, so
    # the 54k-image latent cache costs nothing here)
    stage1 = train.run(
        compose(
            [
                *STEPS,
                *dataset,
                "stage=autoencoder",
                "model=ae",
                "model.net.channels=[8,8,8]",
                "model.net.norm_groups=4",
                f"paths.output_dir={tmp_path}/stage1",
            ]
        )
    )
    stage2 = train.run(
        compose(
            [
                *STEPS,
                *dataset,
                "model=identity",
                "model.training.max_steps=null",
                "model.training.max_epochs=0",
                f"paths.output_dir={tmp_path}/stage2",
            ]
        )
    )
    assert stage1["ae/steps"] == 6 and stage2["ldm/steps"] == 5
    assert stage1["dataset_source"].startswith("local" if data == "60k" else "bundled")


def test_step_budget_sets_the_lr_schedule_and_validation_cadence(compose, tmp_path):
    from tinyldm.training.trainer import RunLoggers, build_trainer, stage_length

    cfg = compose([*STEPS, "model=ae", "dataset=mnist_5k", "diffusion.max_steps=10", "diffusion.val_every_n_steps=4"])
    assert stage_length(cfg.diffusion) == {
        "max_steps": 10,
        "max_epochs": -1,
        "val_check_interval": 3,
        "check_val_every_n_epoch": None,
    }  # 3 validations: steps 3, 6, 9
    trainer = build_trainer(cfg, "diffusion", tmp_path, RunLoggers(None), **stage_length(cfg.diffusion))
    assert trainer.max_steps == 10 and trainer.max_epochs == -1
    epochs = compose(["debug=smoke"])  # the smoke config counts in epochs
    assert stage_length(epochs.diffusion) == {"max_epochs": 2, "max_steps": -1}
