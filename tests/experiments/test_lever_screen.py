"""experiments/lever_screen.sh and experiments/lever_table.py: same-budget training A/Bs on several seeds, tabulated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.runs import run_repo_script

FIGURES = {"eval/cond_acc": 0.996, "eval/fid_ratio": 2.0, "eval/fid_recon_ratio": 1.3, "eval/diversity": 0.91}


def _metrics(out: Path, run: str, **changes: float) -> None:
    (out / run).mkdir(parents=True)
    (out / run / "metrics.json").write_text(json.dumps({**FIGURES, **{f"eval/{k}": v for k, v in changes.items()}}))


def test_lever_table_puts_arms_in_rows_seeds_in_columns_and_counts_the_targets(tmp_path):
    _metrics(tmp_path, "base_s0")
    _metrics(tmp_path, "base_s1", cond_acc=0.994)
    _metrics(tmp_path, "lever_s0", diversity=0.95)
    (tmp_path / "lever_s1").mkdir()  # a run that never wrote its metrics
    (tmp_path / "cache_s0").mkdir()  # not a run
    result = run_repo_script("experiments/lever_table.py", str(tmp_path), "lever", "base", timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "| arm | seed 0 | seed 1 | median | all four met |" in lines
    assert lines.index(next(line for line in lines if line.startswith("| lever |"))) < lines.index(
        next(line for line in lines if line.startswith("| base |"))
    )  # the order asked for
    base = next(line for line in lines if line.startswith("| base |"))
    assert "**99.6 % / 2.00 / 1.30 / 0.910**" in base and "| 99.4 % / 2.00 / 1.30 / 0.910 |" in base
    assert "99.50 % / 2.00 / 1.30 / 0.910" in base and base.endswith("| 1 of 2 |")  # median of 99.6 and 99.4
    lever = next(line for line in lines if line.startswith("| lever |"))
    assert "| – |" in lever and lever.endswith("| 1 of 2 |")
    assert "<!-- lever_s1: no metrics.json (not run, failed or cut) -->" in lines


def test_lever_table_refuses_an_arm_it_has_no_runs_for(tmp_path):
    _metrics(tmp_path, "base_s0")
    result = run_repo_script("experiments/lever_table.py", str(tmp_path), "base", "typo", timeout=60)
    assert result.returncode == 2 and "for ['typo']" in result.stderr


@pytest.mark.parametrize(
    "args,env,message",
    [
        ([], {}, "usage: experiments/lever_screen.sh OUT ARM"),
        (["base", "bad/name=x=1"], {}, "arm name 'bad/name' must be letters"),
        (["base", "base=seed=3"], {}, "arm name 'base' is given twice"),
        (["base", "b"], {"JOBS": "0"}, "JOBS must be a whole number > 0, got '0'"),
        (["base", "b"], {"SEEDS": "0 x"}, "SEEDS must be whole numbers >= 0, got 'x'"),
        (["base", "b"], {"DEADLINE": "soon"}, "DEADLINE must be a whole number of seconds > 0"),
    ],
)
def test_lever_screen_refuses_bad_arguments_before_any_work(tmp_path, args, env, message):
    out = tmp_path / "out"
    result = run_repo_script("experiments/lever_screen.sh", str(out), *args, timeout=60, **env)
    assert result.returncode == 2 and message in result.stderr
    assert not out.exists()


def test_lever_screen_never_runs_an_arm_again_over_a_finished_run(tmp_path):
    out = tmp_path / "out"
    _metrics(out, "base_s1")
    result = run_repo_script("experiments/lever_screen.sh", str(out), "new", "base", timeout=60, SEEDS="0 1")
    assert result.returncode == 2 and "out/base_s1 already exists" in result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["base_s1"]  # nothing started, nothing touched
    assert (out / "base_s1" / "metrics.json").read_text().startswith("{")


@pytest.mark.slow  # real training runs: a closed study's driver keeps only its fast checks by default
def test_lever_screen_trains_each_arm_on_one_stage1_per_seed_and_tabulates(tmp_path):
    """Two arms on the smoke config: the first arm trains stage 1, the second reuses it with its overrides."""
    out = tmp_path / "out"
    common = (
        "debug=smoke diffusion.max_epochs=null diffusion.max_steps=3 evaluation.n_per_class=5 "
        "evaluation.classifier_epochs=1 sampler.steps=5 "
        f"paths.log_dir={tmp_path}/outputs paths.data_dir={tmp_path}/data"
    )
    result = run_repo_script(
        "experiments/lever_screen.sh",
        str(out),
        "base",
        "lever=diffusion.loss.min_snr_gamma=2,+diffusion.optimizer.betas=[0.9,0.99]",
        timeout=600,
        SEEDS="0",
        COMMON=common,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Stored the stage-1 checkpoint in the cache" in (out / "base_s0.log").read_text()
    assert "Reusing the cached stage-1 checkpoint" in (out / "lever_s0.log").read_text()
    overrides = (out / "lever_s0" / ".hydra" / "overrides.yaml").read_text()
    assert "diffusion.loss.min_snr_gamma=2" in overrides
    assert "+diffusion.optimizer.betas=[0.9,0.99]" in overrides  # the list's comma stayed inside it
    assert "min_snr_gamma" not in (out / "base_s0" / ".hydra" / "overrides.yaml").read_text()
    for arm in ("base", "lever"):
        assert json.loads((out / f"{arm}_s0" / "metrics.json").read_text())["ldm/steps"] == 3
    assert "| arm | seed 0 | median | all four met |" in result.stdout
    assert result.stdout.index("| base |") < result.stdout.index("| lever |")

    # a later screen against the same baseline run: its cache is copied, so stage 1 and classifier are reused
    again = tmp_path / "again"
    before = sorted(p.relative_to(out) for p in (out / "cache_s0").rglob("*"))
    result = run_repo_script(
        "experiments/lever_screen.sh",
        str(again),
        "next",
        timeout=600,
        SEEDS="0",
        COMMON=common,
        CACHES_FROM=f"0={out / 'base_s0'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"seed 0: cache copied from {out / 'cache_s0'}" in result.stderr
    log = (again / "next_s0.log").read_text()
    assert "Reusing the cached stage-1 checkpoint" in log and "reusing cached classifier" in log
    assert sorted(p.relative_to(out) for p in (out / "cache_s0").rglob("*")) == before  # the source is untouched


def _finished_run(path: Path, seed: int, cache: Path) -> Path:
    path.mkdir(parents=True)
    (path / "resolved_config.yaml").write_text(f"seed: {seed}\npaths:\n  cache_dir: {cache}\n")
    return path


@pytest.mark.parametrize(
    "spec,message",
    [
        ("0", "'0' is not SEED=RUN_DIR with SEED one of SEEDS"),
        ("5={run0}", "'5={run0}' is not SEED=RUN_DIR with SEED one of SEEDS (0 1)"),
        ("0={run0} 0={run0}", "seed 0 is given twice"),
        ("1={run0}", "was trained with seed=0, not 1: its stage 1 and classifiers belong to another split"),
        ("0={tmp}", "is not a finished train.py run (no resolved_config.yaml)"),
        ("1={run1}", "does not exist"),
        ("0={run0}", "out/cache_s0 already exists: a screen's cache is never replaced"),
    ],
)
def test_lever_screen_refuses_a_bad_cache_source_before_any_work(tmp_path, spec, message):
    cache = tmp_path / "cache"
    (cache / "classifiers").mkdir(parents=True)
    run0 = _finished_run(tmp_path / "run0", 0, cache)
    run1 = _finished_run(tmp_path / "run1", 1, tmp_path / "missing")
    out = tmp_path / "out"
    if "never replaced" in message:
        (out / "cache_s0").mkdir(parents=True)
    spec = spec.format(run0=run0, run1=run1, tmp=tmp_path)
    result = run_repo_script("experiments/lever_screen.sh", str(out), "base", timeout=60, SEEDS="0 1", CACHES_FROM=spec)
    assert result.returncode == 2 and message.format(run0=run0) in result.stderr, result.stderr
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == ["cache_s0"]  # nothing started
