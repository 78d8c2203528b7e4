"""Hard kills and parallel jobs: reruns reuse only complete artifacts, resume continues, one stage 1 per key."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from tests.helpers.runs import REPO, path_overrides, read_metrics, subprocess_env

BASE = [
    "model=ae",
    "debug=smoke",
    "logger=none",
    "evaluation.enabled=false",
    "model.training.max_epochs=2",
    "diffusion.grid.every_n_steps=0",
]
KILL = "+callbacks.kill._target_=tests.helpers.callbacks.KillSelf"


def _entries(cache):
    folder = cache / "autoencoders"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


@pytest.mark.parametrize("point", ["stage1", "cache_store", "stage2"])
def test_killed_main_job_then_rerun_and_resume(compose, tmp_path, caplog, point):
    """SIGKILL a real main job; the same command again, then resume=true on the killed run."""
    from tinyldm.tasks import train

    cache = tmp_path / "cache"  # the compose fixture's paths.cache_dir too
    killed = tmp_path / "killed"
    common = [*BASE, *path_overrides(tmp_path, cache), f"hydra.run.dir={killed}"]
    if point == "cache_store":
        command = [sys.executable, str(REPO / "tests/helpers/train_killed_while_caching.py"), *common]
    else:
        module = "AutoencoderModule" if point == "stage1" else "LatentDiffusionModule"
        command = [
            sys.executable,
            str(REPO / "train.py"),
            *common,
            KILL,
            "+callbacks.kill.epoch=1",
            f"+callbacks.kill.module={module}",
        ]
    result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr[-3000:]

    entries = _entries(cache)
    if point == "stage1":
        assert entries == []  # nothing was stored, and the lock died with the process
    else:
        assert len(entries) == 1
        assert (entries[0] / "complete.json").exists() == (point == "stage2")

    with caplog.at_level(logging.WARNING, logger="tinyldm.training.autoencoder_cache"):
        rerun = train.run(compose([*BASE, f"paths.output_dir={tmp_path}/rerun"]))
    assert rerun["autoencoder_reused"] == (point == "stage2")
    assert ("no completion marker" in caplog.text) == (point == "cache_store")
    assert all((e / "complete.json").exists() for e in _entries(cache))

    train.run(compose([*BASE, "resume=true", f"paths.output_dir={killed}"]))
    metrics = read_metrics(killed)
    stage_dir = "diffusion" if point == "stage2" else "autoencoder"
    assert metrics["resumed_from"].startswith(str(killed / "checkpoints" / stage_dir))
    assert metrics["ldm/epochs"] == 2 and (killed / "checkpoints" / "diffusion.ckpt").exists()


def test_parallel_jobs_with_one_stage1_config_train_it_once(tmp_path):
    cache = tmp_path / "cache"
    jobs = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "train.py"),
                *BASE,
                *path_overrides(tmp_path, cache),
                f"hydra.run.dir={tmp_path / f'job{i}'}",
            ],
            cwd=REPO,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [job.communicate(timeout=400)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    reused = sorted(read_metrics(tmp_path / f"job{i}")["autoencoder_reused"] for i in range(2))
    assert reused == [False, True]
    assert len(_entries(cache)) == 1
