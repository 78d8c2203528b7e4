"""experiments/gpu_guidance_grid.sh: refuses a bad deadline before any work, and says what it had no time for.

Its real parts train on a GPU (docs/experiments/gpu-screens.md); the CPU form of the same train/evaluate commands is
exercised by the end-to-end tests of train.py and evaluate.py.
"""

from __future__ import annotations

import os
import subprocess

from tests.helpers.runs import run_repo_script


def _grid(out, **env: str) -> subprocess.CompletedProcess:
    return run_repo_script("experiments/gpu_guidance_grid.sh", str(out), timeout=60, **env)


def test_refuses_a_bad_deadline_before_any_work(tmp_path):
    result = _grid(tmp_path / "out", DEADLINE="ten")
    assert result.returncode == 2 and "DEADLINE must be a whole number of seconds > 0, got 'ten'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_skips_every_part_it_has_no_time_for_and_fails_saying_so(tmp_path):
    out = tmp_path / "out"
    result = _grid(out, DEADLINE="1", SEEDS="3", GUIDE_AT="0.2")
    parts = (out / "parts.txt").read_text().splitlines()
    assert result.returncode == 1, result.stderr
    assert parts == [
        "train_s3: skipped, no time left before the deadline",
        f"grid_s3: skipped, no checkpoint {out}/mnist_s3/checkpoints/diffusion.ckpt",
        "guide0.2_s3: skipped, no time left before the deadline",
    ]
    assert "not done: train_s3(skipped) grid_s3(skipped) guide0.2_s3(skipped)" in result.stderr
    assert sorted(os.listdir(out)) == ["parts.txt"]  # nothing was trained
