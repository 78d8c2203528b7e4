"""Both stages under 2-process DDP on CPU (gloo), and a bf16-mixed run on CPU."""

from __future__ import annotations

import math

from tests.conftest import path_overrides, read_metrics, run_script


def test_ddp_cpu_two_processes_write_one_run(tmp_path):
    run_dir = tmp_path / "run"
    run_script("train.py", ["model=ae", "debug=smoke", "trainer=ddp_cpu", "logger=csv", "evaluation.enabled=false",
                            *path_overrides(tmp_path)], run_dir, timeout=600)
    metrics = read_metrics(run_dir)
    assert (run_dir / "checkpoints" / "autoencoder.ckpt").is_file()
    assert (run_dir / "checkpoints" / "diffusion.ckpt").is_file()
    assert metrics["ldm/val/loss"] > 0 and metrics["ae/val/psnr"] > 0
    assert sorted(p.name for p in (run_dir / "checkpoints" / "diffusion").glob("*.ckpt")) == ["epoch001.ckpt", "last.ckpt"]
    outputs = list((tmp_path / "outputs").rglob("metrics.json")) if (tmp_path / "outputs").exists() else []
    assert outputs == [], f"DDP created extra run dirs: {outputs}"
    assert len(list(run_dir.rglob("metrics.json"))) == 1


def test_bf16_mixed_on_cpu_keeps_losses_finite(tmp_path):
    run_dir = tmp_path / "run"
    run_script("train.py", ["model=ae", "debug=smoke", "trainer.precision=bf16-mixed", "logger=none", "evaluation.enabled=false",
                            "diffusion.max_epochs=1", *path_overrides(tmp_path)], run_dir)
    metrics = read_metrics(run_dir)
    assert math.isfinite(metrics["ae/val/loss"]) and math.isfinite(metrics["ldm/val/loss"])
