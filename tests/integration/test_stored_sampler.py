"""sample.py and evaluate.py draw with the checkpoint's own solver and guidance, as its run's evaluation did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.runs import path_overrides, read_metrics

# the smoke main job's data and evaluation, as evaluate.py must be told them to read its samples the same way
SMOKE_DATA = [
    "dataset=mnist",
    "dataset.source=bundled",
    "dataset.max_train_samples=256",
    "dataset.batch_size=64",
    "dataset.num_workers=0",
    "evaluation.n_per_class=6",
    "evaluation.classifier_epochs=1",
]


@pytest.fixture(scope="module")
def main_job(smoke_main_job) -> dict[str, Path]:
    return smoke_main_job


def _stored(ckpt: Path) -> tuple[dict, dict]:
    """The solver and guidance configs the checkpoint stores (what its run evaluated with)."""
    from tinyldm.pipeline import LatentDiffusionPipeline

    pipeline = LatentDiffusionPipeline.from_checkpoint(ckpt)
    return pipeline.solver.as_config(), pipeline.guidance.as_config()


def _same_evaluation(ours: dict, runs: dict) -> None:
    assert ours["eval/num_samples"] == runs["eval/num_samples"] == 60
    for key in ("eval/cond_acc", "eval/fid", "eval/diversity"):
        assert ours[key] == pytest.approx(runs[key], rel=1e-6), key
    assert ours["eval/misread"] == runs["eval/misread"]


def _sample(compose, ckpt: Path, out: Path, **overrides) -> dict:
    """sample.py in this process without the helper's own ``sampler.steps``: the stored sampler is the point."""
    from tinyldm.tasks import sample

    items = [f"ckpt={ckpt}", f"out={out}", "progress=false", *[f"{k}={v}" for k, v in overrides.items()]]
    sample.run(compose(items, config_name="sample"))
    with np.load(out) as data:
        return json.loads(str(data["metadata"]))


def test_sample_with_the_runs_seed_draws_the_runs_own_evaluation_samples(compose, main_job, tmp_path):
    from tinyldm.tasks import evaluate

    solver, guidance = _stored(main_job["ckpt"])
    assert solver["_target_"].endswith("DPMSolver2MSDE") and guidance["_target_"].endswith("AdaptiveProjectedGuidance")
    assert guidance["scale"] == 3.0 and guidance["autoguidance"] == 3.0 and guidance["momentum"] == -0.5
    out = tmp_path / "samples.npz"
    metadata = _sample(compose, main_job["ckpt"], out, n_per_class=6, seed=0)
    assert (metadata["sampler"], metadata["guidance"]) == (solver, guidance)
    # the file, scored like the run scored its own evaluation samples: the same images give the same figures
    cfg = compose([f"samples={out}", "seed=0", *SMOKE_DATA, *path_overrides(main_job["tmp"])], config_name="evaluate")
    _same_evaluation(evaluate.run(cfg), read_metrics(main_job["run"]))


def test_evaluate_on_the_checkpoint_reproduces_the_runs_evaluation(compose, main_job):
    from tinyldm.tasks import evaluate

    cfg = compose(
        [f"ckpt={main_job['ckpt']}", "seed=0", *SMOKE_DATA, *path_overrides(main_job["tmp"])], config_name="evaluate"
    )
    ours = evaluate.run(cfg)
    _same_evaluation(ours, read_metrics(main_job["run"]))
    assert ours["eval/sampler_kind"] == "dpmpp_2m_sde" and ours["eval/guidance_method"] == "apg"
    assert ours["eval/autoguidance_scale"] == 3.0 and ours["eval/apg_momentum"] == -0.5


def test_an_override_changes_only_what_it_names(compose, main_job, tmp_path):
    solver, guidance = _stored(main_job["ckpt"])
    common = {"n_per_class": 1, "classes": "[3]", "seed": 0}
    own = _sample(compose, main_job["ckpt"], tmp_path / "own.npz", **common)
    key = _sample(compose, main_job["ckpt"], tmp_path / "key.npz", **common, **{"sampler.steps": 3})
    assert solver["steps"] != 3 and key["sampler"] == {**solver, "steps": 3} and key["guidance"] == guidance
    with np.load(tmp_path / "own.npz") as a, np.load(tmp_path / "key.npz") as b:
        assert not np.array_equal(a["images"], b["images"])
    assert (own["sampler"], own["guidance"]) == (solver, guidance)
    scale = _sample(compose, main_job["ckpt"], tmp_path / "scale.npz", **common, **{"guidance.scale": 1.5})
    assert scale["guidance"] == {**guidance, "scale": 1.5} and scale["sampler"] == solver
    # sampler=NAME / guidance=NAME replace the stored one with conf/<group>/NAME.yaml; keys after it change that one
    ddim = _sample(compose, main_job["ckpt"], tmp_path / "ddim.npz", **common, sampler="ddim", **{"sampler.steps": 3})
    assert ddim["sampler"]["_target_"].endswith("DDIMSolver") and ddim["sampler"]["steps"] == 3
    assert ddim["guidance"] == guidance  # the solver changed, not the guidance
    cfg = _sample(compose, main_job["ckpt"], tmp_path / "cfg.npz", **common, guidance="cfg")
    assert cfg["guidance"]["_target_"].endswith("ClassifierFreeGuidance") and cfg["guidance"]["autoguidance"] == 1.0


def test_a_bad_override_is_refused_naming_it(compose, main_job, tmp_path):
    with pytest.raises(ValueError, match="momentum must be a number in \\(-1, 1\\)"):
        _sample(compose, main_job["ckpt"], tmp_path / "x.npz", **{"guidance.momentum": 2})
    with pytest.raises(TypeError, match="DPMSolver2MSDE \\(dpmpp_2m_sde\\) has no setting eta; its settings: steps"):
        _sample(compose, main_job["ckpt"], tmp_path / "e.npz", **{"sampler.eta": 0.5})
    with pytest.raises(Exception, match="sampler.bogus"):
        _sample(compose, main_job["ckpt"], tmp_path / "y.npz", **{"sampler.bogus": 1})
    assert not list(tmp_path.iterdir())


def test_the_override_layers_list_every_setting(compose):
    """``sampler.KEY=`` / ``guidance.KEY=`` are refused by Hydra for a key the layer lacks, so it lists every one."""
    from tinyldm.diffusion import GUIDANCES, SOLVERS

    solver_settings = {key for cls in SOLVERS.values() for key in cls().config}
    guidance_settings = {key for cls in GUIDANCES.values() for key in cls().config}
    for name in ("sample", "evaluate"):
        cfg = compose(["ckpt=x"] if name == "sample" else [], config_name=name)
        assert set(cfg.sampler) == {"_target_", *solver_settings}, name
        assert set(cfg.guidance) == {"_target_", *guidance_settings}, name
