"""Both stages under 2-process DDP on CPU (gloo), and a bf16-mixed run on CPU."""

from __future__ import annotations

import json
import math

from tests.helpers.runs import path_overrides, read_metrics, run_script


def test_ddp_cpu_whole_pipeline_writes_one_evaluated_run(tmp_path):
    """Both stages and the end-of-training evaluation under 2-process DDP; each rank its own stage-2 shard."""
    run_dir, orders, losses = tmp_path / "run", tmp_path / "orders", tmp_path / "losses"
    run_script(
        "train.py",
        [
            "model=ae",
            "debug=smoke",
            "trainer=ddp_cpu",
            "logger=csv",
            "diffusion.grid.every_n_steps=0",
            "+callbacks.order._target_=tests.helpers.callbacks.RecordSampleOrder",
            f"+callbacks.order.folder={orders}",
            "+callbacks.losses._target_=tests.helpers.callbacks.RecordTrainLosses",
            f"+callbacks.losses.folder={losses}",
            *path_overrides(tmp_path),
        ],
        run_dir,
        timeout=600,
    )
    metrics = read_metrics(run_dir)
    assert (run_dir / "checkpoints" / "autoencoder.ckpt").is_file()
    assert (run_dir / "checkpoints" / "diffusion.ckpt").is_file()
    assert metrics["ldm/val/loss"] > 0 and metrics["ae/val/psnr"] > 0
    assert 0.0 <= metrics["eval/cond_acc"] <= 1.0 and metrics["eval/fid"] > 0
    assert sorted(p.name for p in (run_dir / "checkpoints" / "diffusion").glob("*.ckpt")) == [
        "epoch001.ckpt",
        "last.ckpt",
    ]
    outputs = list((tmp_path / "outputs").rglob("metrics.json")) if (tmp_path / "outputs").exists() else []
    assert outputs == [], f"DDP created extra run dirs: {outputs}"
    assert len(list(run_dir.rglob("metrics.json"))) == 1

    order = {
        (rank, epoch): json.loads((orders / f"rank{rank}-epoch{epoch}.json").read_text())
        for rank in (0, 1)
        for epoch in (0, 1)
    }
    for epoch in (0, 1):  # the ranks split the data: disjoint halves that cover it
        assert not set(order[0, epoch]) & set(order[1, epoch])
        assert len(order[0, epoch]) == len(order[1, epoch]) == 128
    for rank in (0, 1):  # and reshuffle every epoch
        assert order[rank, 0] != order[rank, 1]

    # the epoch's training loss is the mean over both ranks' steps, the same figure on each rank
    stages = (("AutoencoderModule", "ae/train/loss_epoch"), ("LatentDiffusionModule", "ldm/train/loss_epoch"))
    for module, key in stages:
        ranks = [json.loads((losses / f"{module}-rank{rank}.json").read_text()) for rank in (0, 1)]
        steps = ranks[0]["losses"] + ranks[1]["losses"]
        assert len(ranks[0]["losses"]) == len(ranks[1]["losses"]) > 0 and ranks[0]["losses"] != ranks[1]["losses"]
        assert ranks[0]["logged"][key] == ranks[1]["logged"][key]
        assert math.isclose(ranks[0]["logged"][key], sum(steps) / len(steps), rel_tol=1e-5)


def test_bf16_mixed_on_cpu_keeps_losses_finite(tmp_path):
    run_dir = tmp_path / "run"
    run_script(
        "train.py",
        [
            "model=ae",
            "debug=smoke",
            "trainer.precision=bf16-mixed",
            "logger=none",
            "evaluation.enabled=false",
            "diffusion.max_epochs=1",
            "dataset.max_train_samples=64",
            "trainer.limit_val_batches=1",
            "diffusion.grid.every_n_steps=0",
            *path_overrides(tmp_path),
        ],
        run_dir,
    )
    metrics = read_metrics(run_dir)
    assert math.isfinite(metrics["ae/val/loss"]) and math.isfinite(metrics["ldm/val/loss"])
