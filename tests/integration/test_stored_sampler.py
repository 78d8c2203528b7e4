"""sample.py and evaluate.py draw with the checkpoint's own sampler, as its run's evaluation did, unless told."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.runs import path_overrides, read_metrics, run_script

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
def main_job(tmp_path_factory) -> dict[str, Path]:
    """The main job's form on the smoke config: its stored sampler is the SDE solver with APG and autoguidance,
    none of which is conf/sampler's default, so drawing with anything else shows."""
    tmp = tmp_path_factory.mktemp("main_job")
    run_dir = tmp / "run"
    run_script(
        "train.py",
        [
            "model=vqvae",
            "+experiment=mnist_cond",
            "debug=smoke",
            "dataset.source=bundled",
            "logger=none",
            "diffusion.grid.every_n_steps=0",
            *path_overrides(tmp),
        ],
        run_dir,
    )
    return {"tmp": tmp, "run": run_dir, "ckpt": run_dir / "checkpoints" / "diffusion.ckpt"}


def _stored_sampler(ckpt: Path) -> dict:
    from tinyldm.pipeline import LatentDiffusionPipeline

    return LatentDiffusionPipeline.from_checkpoint(ckpt).sampler.as_config()


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

    stored = _stored_sampler(main_job["ckpt"])
    assert stored["kind"] == "dpmpp_2m_sde" and stored["guidance_method"] == "apg"
    assert stored["guidance_scale"] == 3.0 and stored["autoguidance_scale"] == 3.0
    out = tmp_path / "samples.npz"
    metadata = _sample(compose, main_job["ckpt"], out, n_per_class=6, seed=0)
    assert metadata["sampler"] == stored
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
    assert ours["sampler_kind"] == "dpmpp_2m_sde" and ours["guidance_method"] == "apg"
    assert ours["autoguidance_scale"] == 3.0


def test_an_override_changes_only_what_it_names(compose, main_job, tmp_path):
    stored = _stored_sampler(main_job["ckpt"])
    common = {"n_per_class": 1, "classes": "[3]", "seed": 0}
    own = _sample(compose, main_job["ckpt"], tmp_path / "own.npz", **common)
    key = _sample(compose, main_job["ckpt"], tmp_path / "key.npz", **common, **{"sampler.steps": 3})
    assert stored["steps"] != 3 and key["sampler"] == {**stored, "steps": 3}
    with np.load(tmp_path / "own.npz") as a, np.load(tmp_path / "key.npz") as b:
        assert not np.array_equal(a["images"], b["images"])
    assert own["sampler"] == stored
    # sampler=NAME replaces the stored sampler with conf/sampler/NAME.yaml; keys after it change that one
    whole = _sample(compose, main_job["ckpt"], tmp_path / "ddim.npz", **common, sampler="ddim", **{"sampler.steps": 3})
    assert whole["sampler"]["kind"] == "ddim" and whole["sampler"]["steps"] == 3
    assert whole["sampler"]["guidance_method"] == "cfg" and whole["sampler"]["autoguidance_scale"] == 1.0


def test_a_bad_override_is_refused_naming_it(compose, main_job, tmp_path):
    with pytest.raises(ValueError, match="apg_momentum must be a number in \\(-1, 1\\)"):
        _sample(compose, main_job["ckpt"], tmp_path / "x.npz", **{"sampler.apg_momentum": 2})
    with pytest.raises(Exception, match="sampler.bogus"):
        _sample(compose, main_job["ckpt"], tmp_path / "y.npz", **{"sampler.bogus": 1})
    assert not list(tmp_path.iterdir())


def test_the_override_layer_lists_every_sampler_setting(compose):
    """``sampler.KEY=`` is refused by Hydra for a key the layer lacks, so it must list every field."""
    import dataclasses

    from tinyldm.diffusion import DiffusionSampler

    fields = {field.name for field in dataclasses.fields(DiffusionSampler)}
    for name in ("sample", "evaluate"):
        layer = compose(["ckpt=x"] if name == "sample" else [], config_name=name).sampler
        assert set(layer) == {"_target_", *fields}, name
