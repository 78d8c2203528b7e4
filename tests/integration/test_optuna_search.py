"""hparams_search=mnist_optuna runs end to end: trials train, return eval/fid, and Optuna records the best."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import yaml

from tests.helpers.runs import REPO, subprocess_env

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")


def test_optuna_search_runs_trials_and_reports_best_params(tmp_path):
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "hparams_search=mnist_optuna",
        "model=ae",
        "+experiment=mnist_cond",
        "debug=smoke",
        "sampler.steps=5",
        "diffusion.grid.every_n_steps=0",
        "diffusion.max_epochs=1",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]

    (sweep_dir,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {
        "diffusion.optimizer.lr",
        "unet.transformer_depth",
        "conditioner.tokens_per_class",
        "conditioner.p_uncond",
    }
    with (sweep_dir / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(row["status"] == "ok" for row in rows)
    fids = [float(row["eval/fid"]) for row in rows]
    assert best["best_value"] == pytest.approx(min(fids), rel=1e-6)  # the sweeper minimised what train.py returned
    assert len({row["override:diffusion.optimizer.lr"] for row in rows}) == 3  # the trials really differ
    assert [row["autoencoder_reused"] for row in rows] == ["False", "True", "True"]  # one stage 1 for the study
