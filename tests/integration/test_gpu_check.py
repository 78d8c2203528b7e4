"""scripts/gpu_check.sh --smoke: the GPU check runs end to end on a CPU and writes its results."""

from __future__ import annotations

import json
import subprocess

import numpy as np

from tests.helpers.runs import run_repo_script
from tinyldm.data import write_idx


def _write_small_fashion(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 640), ("t10k", 100)):  # >= 50 held-out images: the FID reference
        write_idx(root / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))


def _gpu_check(*args: str, timeout: int) -> subprocess.CompletedProcess:
    """scripts/gpu_check.sh --smoke ARGS, as a user runs it."""
    return run_repo_script("scripts/gpu_check.sh", "--smoke", *args, timeout=timeout)


def test_gpu_check_smoke_runs_every_part_and_writes_its_results(tmp_path):
    data, out = tmp_path / "fashion", tmp_path / "out"
    _write_small_fashion(data)
    result = _gpu_check("--data", str(data), str(out), timeout=400)
    logs = "\n".join(
        f"{p.name}:\n{p.read_text()[-2000:]}" for p in sorted(out.glob("*.log")) + sorted(out.glob("*.txt"))
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{logs}"
    assert "skipped" in (out / "pytest_gpu.txt").read_text()  # no CUDA here: the gpu tests skip, none fails
    rows = json.loads((out / "throughput_precision" / "throughput.json").read_text())["rows"]
    assert {(r["precision"], r["channels_last"]) for r in rows} == {
        ("32-true", False),
        ("32-true", True),
        ("bf16-mixed", False),
        ("bf16-mixed", True),
    }
    assert all(r["stage1_img_s"] > 0 and r["stage2_img_s"] > 0 and r["sample_img_s"] > 0 for r in rows)
    assert rows[0]["stage2_flops_per_image"] > 1e6
    assert "| precision | batch |" in (out / "throughput_precision" / "throughput.md").read_text()
    metrics = json.loads((out / "fashion" / "metrics.json").read_text())
    assert metrics["dataset"] == "fashion_mnist" and metrics["dataset_source"].startswith("local")
    assert "eval/cond_acc" in metrics and float((out / "fashion_wall_seconds.txt").read_text()) > 0


def test_gpu_check_refuses_a_missing_data_folder(tmp_path):
    result = _gpu_check("--data", str(tmp_path / "nope"), str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2 and "nope is not a folder" in result.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_check_refuses_a_bad_deadline_before_any_work(tmp_path):
    data = tmp_path / "fashion"
    data.mkdir()
    result = _gpu_check("--data", str(data), "--deadline", "0", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2 and "--deadline must be a whole number of seconds > 0, got '0'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_check_skips_the_parts_it_has_no_time_for_and_says_so(tmp_path):
    data, out = tmp_path / "fashion", tmp_path / "out"
    _write_small_fashion(data)
    result = _gpu_check("--data", str(data), "--deadline", "1", str(out), timeout=120)
    parts = (out / "parts.txt").read_text()
    assert result.returncode == 1 and "pytest_gpu(skipped)" in result.stderr
    for name in ("pytest_gpu", "fashion", "throughput"):
        assert f"{name}: skipped, no time left before the deadline" in parts
    assert not (out / "fashion").exists()
