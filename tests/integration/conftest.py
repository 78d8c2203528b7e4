"""The smoke main job, trained once per test process and shared by the tests that read its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.runs import path_overrides, run_script


@pytest.fixture(scope="session")
def smoke_main_job(tmp_path_factory) -> dict[str, Path]:
    """``model=vqvae +experiment=mnist_cond`` on the smoke config, evaluated at the end (60 samples).

    Its stored sampler is the SDE solver with APG and autoguidance (a guide included), none of which is a
    group's default, so a reader that draws with anything else shows. Read-only for the tests that use it.
    """
    tmp = tmp_path_factory.mktemp("main_job")
    run_dir = tmp / "run"
    overrides = ["model=vqvae", "+experiment=mnist_cond", "debug=smoke", "dataset.source=bundled", "logger=none"]
    run_script("train.py", [*overrides, "diffusion.grid.every_n_steps=0", *path_overrides(tmp)], run_dir)
    return {"tmp": tmp, "run": run_dir, "ckpt": run_dir / "checkpoints" / "diffusion.ckpt"}
