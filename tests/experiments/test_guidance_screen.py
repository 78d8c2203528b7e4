"""experiments/guidance_screen.sh: finished runs scored over CFG and APG settings, as their own evaluation was."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.runs import path_overrides, run_repo_script, run_script

SMOKE = (
    "debug=smoke diffusion.max_epochs=null diffusion.max_steps=3 evaluation.n_per_class=5 "
    "evaluation.classifier_epochs=1 sampler.steps=5"
)


def _screen(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run_repo_script("experiments/guidance_screen.sh", str(out), *args, timeout=600, **env)


def test_grid_table_keeps_apg_rows_apart_and_merges_a_repeated_label(tmp_path):
    """The CFG sweep as sweeps before 0.3.0 recorded the settings (bare keys), the APG one as they do now (eval/)."""
    header = ["job", "status", "guidance_scale", "autoguidance_scale", "guidance_method", "apg_eta", "apg_momentum"]
    header += [f"eval/{key}" for key in ("cond_acc", "fid_ratio", "fid_recon_ratio", "diversity")]
    sweeps = {
        "cfg.csv": [[0, "ok", 2.0, 3.5, "cfg", "", "", 0.996, 2.0, 1.3, 0.92]],
        "apg.csv": [[0, "ok", 2.0, 3.5, "apg", 0.0, -0.5, 0.994, 2.0, 1.3, 0.93]],
    }
    for name, rows in sweeps.items():
        with (tmp_path / name).open("w", newline="") as handle:
            named = header if name == "cfg.csv" else [f"eval/{k}" if 2 <= i <= 6 else k for i, k in enumerate(header)]
            csv.writer(handle).writerows([named, *rows])
    result = run_repo_script(
        "experiments/grid_table.py", f"run={tmp_path / 'cfg.csv'}", f"run={tmp_path / 'apg.csv'}", timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "| s, w | run | all four met |"
    assert lines[2] == "| 2, 3.5 | **99.6 % / 2.00 / 1.30 / 0.920** | 1 of 1 |"
    assert lines[3] == "| 2, 3.5, APG η 0 β -0.5 | 99.4 % / 2.00 / 1.30 / 0.930 | 0 of 1 |"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {}, "usage: experiments/guidance_screen.sh OUT LABEL=RUN_DIR"),
        (("nolabel",), {}, "'nolabel' is not allowed: LABEL=RUN_DIR"),
        (("a=/nonexistent",), {}, "/nonexistent/checkpoints/diffusion.ckpt does not exist"),
        (("a=/nonexistent",), {"SCALES": "2;rm"}, "SCALES='2;rm' is not allowed: comma-separated numbers"),
        (("a=/nonexistent",), {"APG_SCALES": "x"}, "APG_SCALES='x' is not allowed"),
        (("a=/nonexistent",), {"APG_MOMENTUM": "-.5x"}, "APG_MOMENTUM='-.5x' is not allowed: a number"),
    ],
)
def test_guidance_screen_refuses_bad_arguments_before_any_work(tmp_path, args, env, message):
    result = _screen(tmp_path / "out", *args, **env)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # real training runs: a closed study's driver keeps only its fast checks by default
def test_guidance_screen_scores_a_run_as_its_own_evaluation_did_and_never_redoes_a_sweep(tmp_path):
    run = tmp_path / "run"
    run_script(
        "train.py",
        [*SMOKE.split(), "seed=3", "sampler=dpmpp_2m_sde", "evaluation.classifier_members=2"]
        + path_overrides(tmp_path),
        run,
    )
    own = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "out"
    env = {"SCALES": "2", "AUTO": "1", "APG_SCALES": "2", "APG_AUTO": "1"}
    env["EVAL"] = "evaluation.n_per_class=5 sampler.steps=5"  # classifier epochs and members: the run's own
    result = _screen(out, f"r={run}", **env)
    assert result.returncode == 0, result.stderr[-3000:]
    with (out / "r_cfg" / "summary.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    # the run's own split (seed 3), classifier, solver (the stochastic one, so its noise too) and sampling seed:
    # the same setting scores the same
    assert own["eval/guidance_scale"] == 2.0 and own["eval/guidance_method"] == "cfg"
    assert row["eval/sampler_kind"] == "dpmpp_2m_sde" and row["eval/timestep_spacing"] == own["eval/timestep_spacing"]
    for key in ("eval/cond_acc", "eval/fid", "eval/fid_floor", "eval/diversity", "eval/member1_fid"):
        assert float(row[key]) == pytest.approx(own[key], rel=1e-5), key
    assert int(row["eval/classifier_members"]) == own["eval/classifier_members"] == 2
    job = json.loads((out / "r_cfg" / "0" / "metrics.json").read_text())
    assert job["eval/misread"] == own["eval/misread"]  # the same samples misread, by as many classifiers
    assert (out / "r_cfg" / "0" / "misread.png").is_file() == bool(own["eval/misread"])  # 2 members: 1 is half
    with (out / "r_apg" / "summary.csv").open() as handle:
        (apg,) = list(csv.DictReader(handle))
    method = (apg["eval/guidance_method"], float(apg["eval/apg_eta"]), float(apg["eval/apg_momentum"]))
    assert method == ("apg", 0.0, -0.5)
    assert "| 2, 1 |" in result.stdout and "| 2, 1, APG η 0 β -0.5 |" in result.stdout
    assert (out / "table.md").read_text() == result.stdout
    again = _screen(out, f"r={run}", **env)
    assert again.returncode == 2 and "r_cfg exists" in again.stderr
