"""sample.py: deterministic npz + grid output, and clear refusals of bad requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.runs import path_overrides, run_repo_script, run_script, sample_in_process


@pytest.fixture(scope="module")
def stage2_checkpoint(tmp_path_factory) -> Path:
    """One smoke-trained class-conditional model shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("stage2")
    run_dir = tmp / "run"
    run_script(
        "train.py",
        [
            "model=ae",
            "debug=smoke",
            "logger=none",
            "diffusion.max_epochs=1",
            "diffusion.grid.every_n_steps=0",
            *path_overrides(tmp),
        ],
        run_dir,
    )
    return run_dir / "checkpoints" / "diffusion.ckpt"


_sample = sample_in_process


def test_sample_writes_npz_and_grid_deterministically(compose, stage2_checkpoint, tmp_path):
    _sample(compose, stage2_checkpoint, tmp_path / "a.npz", n_per_class=2, seed=0, classes="[3,7]")
    _sample(compose, stage2_checkpoint, tmp_path / "b.npz", n_per_class=2, seed=0, classes="[3,7]")
    _sample(compose, stage2_checkpoint, tmp_path / "c.npz", n_per_class=2, seed=1, classes="[3,7]")
    a, b, c = (np.load(tmp_path / f"{n}.npz") for n in "abc")
    assert a["images"].dtype == np.uint8 and a["images"].shape == (4, 28, 28)
    assert a["labels"].dtype == np.int64 and a["labels"].tolist() == [3, 3, 7, 7]
    assert np.array_equal(a["images"], b["images"])
    assert not np.array_equal(a["images"], c["images"])
    metadata = json.loads(str(a["metadata"]))
    assert metadata["sampler"]["steps"] == 4 and metadata["seed"] == 0
    assert (tmp_path / "a.png").is_file()


def test_sample_entry_point(stage2_checkpoint, tmp_path):
    out = tmp_path / "cli.npz"
    run_script(
        "sample.py",
        [
            f"ckpt={stage2_checkpoint}",
            "n_per_class=1",
            "sampler=ddim",
            "sampler.steps=3",
            "guidance.scale=3",
            f"out={out}",
            *path_overrides(tmp_path),
        ],
        tmp_path / "run",
    )
    assert np.load(out)["images"].shape == (10, 28, 28)


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        ({"n_per_class": 0}, ValueError, "n_per_class=0"),
        ({"classes": "[3,12]"}, ValueError, r"\[12\] not among the model's classes"),
        ({"sampler.steps": 5000}, ValueError, "steps=5000 exceeds"),
        ({"guidance.scale": -1}, ValueError, r"scale must be a finite number in \[0, inf\), got -1"),
        ({"seed": -1}, ValueError, r"seed=-1 is not allowed: it must be an integer >= 0"),
        ({"batch_size": 0}, ValueError, r"batch_size=0 is not allowed"),
        ({"device": "tpu"}, ValueError, r"device='tpu' is not one of"),
        ({"classes": "[]"}, ValueError, r"classes=.* must be a non-empty list"),
    ],
)
def test_sample_bad_requests(compose, stage2_checkpoint, tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        _sample(compose, stage2_checkpoint, tmp_path / "x.npz", **overrides)


def test_sample_refuses_missing_folder_existing_file_and_stage1(compose, stage2_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _sample(compose, stage2_checkpoint, tmp_path / "nope" / "x.npz")
    existing = tmp_path / "exists.npz"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=true"):
        _sample(compose, stage2_checkpoint, existing)
    assert existing.read_bytes() == b"keep me"
    grid_only = tmp_path / "grid_only.npz"  # the npz and its grid are one output: either one blocks it
    grid_only.with_suffix(".png").write_bytes(b"my figure")
    with pytest.raises(FileExistsError, match="grid_only.png"):
        _sample(compose, stage2_checkpoint, grid_only)
    assert grid_only.with_suffix(".png").read_bytes() == b"my figure" and not grid_only.exists()
    _sample(compose, stage2_checkpoint, existing, overwrite="true", n_per_class=1)
    assert np.load(existing)["images"].shape == (10, 28, 28)
    stage1 = stage2_checkpoint.parent / "autoencoder.ckpt"
    with pytest.raises(ValueError, match="autoencoder \\(stage 1\\) checkpoint"):
        _sample(compose, stage1, tmp_path / "y.npz")
    with pytest.raises(FileNotFoundError):
        _sample(compose, tmp_path / "missing.ckpt", tmp_path / "z.npz")


def test_concurrent_runs_to_one_output_never_replace_each_other(compose, stage2_checkpoint, tmp_path, monkeypatch):
    """A second run that checked ``out`` while it was free fails at write time; nothing it made is half-written."""
    from tinyldm.pipeline import LatentDiffusionPipeline

    out = tmp_path / "shared.npz"
    real_generate = LatentDiffusionPipeline.generate

    def generate_while_another_run_finishes(*args, **kwargs):
        images = real_generate(*args, **kwargs)
        out.write_bytes(b"the other run's result")  # the other run published while this one sampled
        out.with_suffix(".png").write_bytes(b"the other run's grid")
        return images

    monkeypatch.setattr(LatentDiffusionPipeline, "generate", generate_while_another_run_finishes)
    with pytest.raises(FileExistsError, match="appeared while this run was sampling"):
        _sample(compose, stage2_checkpoint, out, n_per_class=1)
    assert out.read_bytes() == b"the other run's result"
    assert out.with_suffix(".png").read_bytes() == b"the other run's grid"
    assert not list(tmp_path.glob(".shared*.tmp")), "a temp file was left behind"


def test_a_full_disk_leaves_no_half_output_and_the_same_command_runs_again(
    compose, stage2_checkpoint, tmp_path, monkeypatch
):
    """Before, the grid of a failed npz write stayed behind and the rerun was refused ('already exist(s)')."""
    import errno
    import os

    from tinyldm.utils.files import DiskFullError

    out = tmp_path / "s.npz"
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("tinyldm.utils.files.os.fsync", full)
    with pytest.raises(DiskFullError, match="the disk is full .* nothing was kept"):
        _sample(compose, stage2_checkpoint, out, n_per_class=1)
    assert not list(tmp_path.glob("s.*")) and not list(tmp_path.glob(".s.*.tmp"))
    monkeypatch.setattr("tinyldm.utils.files.os.fsync", real_fsync)
    _sample(compose, stage2_checkpoint, out, n_per_class=1)
    assert np.load(out)["images"].shape == (10, 28, 28) and out.with_suffix(".png").is_file()


def test_solver_error_script_measures_distance_to_the_every_timestep_solution(stage2_checkpoint):
    """scripts/solver_error.py: more steps land closer to the reference, which is converged; bad arms refused."""
    common = ["--set", "sampler=dpmpp_2m", "guidance.scale=2", "--per-class", "1"]
    result = run_repo_script(
        "scripts/solver_error.py",
        str(stage2_checkpoint),
        *common,
        *("--arm", "few", "sampler.steps=4"),
        *("--arm", "more", "sampler.steps=50"),
        *("--arm", "grid", "sampler.steps=4", "sampler.timestep_spacing=logsnr", "sampler.logsnr_range=[-3,3]"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): line.split("|") for line in result.stdout.splitlines() if line.startswith("| ")}
    rms = {label: float(cells[4]) for label, cells in rows.items() if label != "arm"}
    assert set(rms) == {"every second timestep", "few", "more", "grid"}
    assert rows["grid"][3].strip() == "logsnr [-3.0, 3.0]" and rows["few"][3].strip() == "trailing"
    assert rms["every second timestep"] < rms["more"] < rms["few"], rms
    assert rms["grid"] > 0

    for arm, message in (
        (("x", "sampler.stepz=4"), "has no setting stepz; its settings: steps"),
        (("x", "steps=4"), "arms change the solver only"),
        (("x", "sampler=ddim", "sampler.eta=1.0"), "a stochastic solver (ddpm, dpmpp_2m_sde, ddim eta > 0)"),
        (("x", "guidance.scale=3"), "arms change the solver only"),
        (("x", "sampler.timestep_spacing=logsnr"), "sampler: logsnr_range=None must be"),
    ):
        refused = run_repo_script(
            "scripts/solver_error.py", str(stage2_checkpoint), *common, "--arm", *arm, timeout=120
        )
        assert refused.returncode != 0 and message in refused.stderr, (arm, refused.stderr[-500:])
