"""export.py: a run's checkpoint as a model folder with its card; sample.py, edit.py and evaluate.py read both alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.runs import path_overrides, read_metrics, run_script

# the smoke main job's data and evaluation, as evaluate.py must be told them (tests/integration/conftest.py)
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
def exported(smoke_main_job, tmp_path_factory) -> dict[str, Path]:
    """The smoke main job exported by the real entry point."""
    out = tmp_path_factory.mktemp("export") / "model"
    result = run_script("export.py", [f"ckpt={smoke_main_job['ckpt']}", f"out={out}"], out.parent / "log")
    assert "Wrote model folder" in result.stdout + result.stderr
    return {**smoke_main_job, "folder": out}


def _images(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        return data["images"], data["labels"]


def test_the_card_shows_the_runs_command_and_measured_figures(exported):
    folder, metrics = exported["folder"], read_metrics(exported["run"])
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: tinyldm\n")
    assert "python train.py model=vqvae +experiment=mnist_cond debug=smoke" in card
    accuracy = f"{100 * metrics['eval/cond_acc']:.1f} %"
    assert f"| conditional accuracy (classifier reads the class asked for) | {accuracy}" in card
    for key, label in [("eval/fid_ratio", "FID ÷ floor"), ("eval/fid_recon_ratio", "FID ÷ ceiling")]:
        assert f"| {label} | {metrics[key]:.2f} |" in card, key
    assert f"(evaluation classifier's features) | {metrics['eval/fid']:.2f} |" in card
    assert f"| diversity (within-class spread ÷ real; ≪ 1 is mode collapse) | {metrics['eval/diversity']:.3f} |" in card
    assert f"{metrics['eval/num_samples']:,} samples" in card and "included (the EMA weights at step" in card
    assert (folder / "training_config.yaml").read_text() == (exported["run"] / "resolved_config.yaml").read_text()
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert size < 10e6  # a few MB: EMA weights, the guide and stage 1, no optimizer state


def test_sample_and_edit_draw_the_same_images_from_the_folder_and_the_checkpoint(exported, compose, tmp_path):
    from tinyldm.tasks import edit, sample

    cache = f"paths.cache_dir={exported['tmp']}/cache"
    edits = ["mode=img2img", "source=heldout", "n=3", "strength=0.6", "target_class=4", "progress=false"]
    for name, source in (("ckpt", exported["ckpt"]), ("folder", exported["folder"])):
        draw = [f"ckpt={source}", f"out={tmp_path / name}.npz", "n_per_class=2", "progress=false"]
        sample.run(compose(draw, config_name="sample"))
        edit.run(compose([f"ckpt={source}", f"out={tmp_path / name}_edit.npz", *edits, *SMOKE_DATA[:3], cache], "edit"))
    for suffix in ("", "_edit"):
        (a, la), (b, lb) = _images(tmp_path / f"ckpt{suffix}.npz"), _images(tmp_path / f"folder{suffix}.npz")
        assert np.array_equal(a, b) and np.array_equal(la, lb), suffix


def test_evaluate_on_the_folder_reproduces_the_runs_evaluation(exported, compose):
    from tinyldm.tasks import evaluate

    overrides = [f"ckpt={exported['folder']}", "seed=0", *SMOKE_DATA, *path_overrides(exported["tmp"])]
    ours, runs = evaluate.run(compose(overrides, config_name="evaluate")), read_metrics(exported["run"])
    assert ours["eval/num_samples"] == runs["eval/num_samples"] == 60
    for key in ("eval/cond_acc", "eval/fid", "eval/fid_recon", "eval/diversity"):
        assert ours[key] == pytest.approx(runs[key], rel=1e-6), key


def test_export_refuses_before_any_work_and_never_borrows_another_runs_figures(exported, compose, tmp_path):
    from tinyldm.tasks import export

    def run(**overrides):
        return export.run(compose([f"{k}={v}" for k, v in overrides.items()], config_name="export"))

    with pytest.raises(FileExistsError, match="never written over"):
        run(ckpt=exported["ckpt"], out=exported["folder"])
    with pytest.raises(ValueError, match="is a folder: export.py reads a stage-2 .ckpt"):
        run(ckpt=exported["folder"], out=tmp_path / "again")
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        run(ckpt=exported["ckpt"], out=tmp_path / "no" / "such")
    # a copy away from its run: the card says nothing was measured rather than guess
    alone = tmp_path / "alone.ckpt"
    shutil.copy(exported["ckpt"], alone)
    assert run(ckpt=alone, out=tmp_path / "alone")["measured"] is False
    card = (tmp_path / "alone" / "README.md").read_text()
    assert "None: no evaluation of this checkpoint was recorded." in card and "FID ÷" not in card
    # another run's metrics.json is refused by name
    with pytest.raises(ValueError, match="measures .*diffusion.ckpt.*not .*alone.ckpt"):
        run(ckpt=alone, out=tmp_path / "borrowed", metrics=exported["run"] / "metrics.json")
    assert not (tmp_path / "borrowed").exists()
    assert json.loads((tmp_path / "alone" / "model_index.json").read_text())["format"] == "tinyldm-model-folder"
