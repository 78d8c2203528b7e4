"""evaluate.py on a samples file and on a checkpoint; a 2-point guidance sweep collected into CSV + plot."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.runs import path_overrides, read_metrics, run_script
from tinyldm.utils.images import to_uint8


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """A smoke-trained model whose run also evaluated itself (classifier cached in the shared cache)."""
    tmp = tmp_path_factory.mktemp("evaluate")
    run_dir = tmp / "run"
    run_script(
        "train.py",
        ["model=ae", "debug=smoke", "logger=none", "diffusion.grid.every_n_steps=0", *path_overrides(tmp)],
        run_dir,
    )
    return {"tmp": tmp, "run": run_dir, "ckpt": run_dir / "checkpoints" / "diffusion.ckpt"}


def test_training_ends_with_an_evaluation(workspace):
    metrics = read_metrics(workspace["run"])
    for key in ("eval/cond_acc", "eval/fid", "eval/fid_floor", "eval/classifier_val_acc", "eval/diversity"):
        assert key in metrics, key
    assert metrics["eval/num_samples"] == 60
    assert 0.0 <= metrics["eval/cond_acc"] <= 1.0 and metrics["eval/fid"] > 0
    # one classifier: the misread list is exactly the samples its accuracy counts as wrong, drawn when any
    misread = metrics["eval/misread"]
    assert len(misread) == round((1 - metrics["eval/cond_acc"]) * 60)
    assert all(m["asked"] != m["read"] and m["votes"] == 1 for m in misread)
    assert (workspace["run"] / "images" / "eval_misread.png").is_file() == bool(misread)


def test_evaluate_samples_file_reuses_cached_classifier(workspace, tmp_path):
    from tinyldm.data import DigitsDataModule

    dm = DigitsDataModule(name="mnist_5k", source="bundled", seed=0)
    dm.setup()
    images = to_uint8(dm.val_dataset.tensors[0][:100], dm.pad)
    labels = dm.val_dataset.tensors[1][:100].numpy()
    np.savez(tmp_path / "real.npz", images=images, labels=labels)
    result = run_script(
        "evaluate.py",
        [
            f"samples={tmp_path / 'real.npz'}",
            "dataset=mnist_5k",
            "evaluation.classifier_epochs=1",
            *path_overrides(workspace["tmp"]),
        ],
        tmp_path / "eval",
    )
    metrics = read_metrics(tmp_path / "eval")
    assert "reusing cached classifier" in result.stdout + result.stderr
    assert metrics["eval/cond_acc"] > 0.5  # real digits, even for a 1-epoch classifier
    assert "fid_floor" in result.stdout
    misread = metrics["eval/misread"]  # the real digits the classifier reads wrong, each with its true label
    assert len(misread) == round((1 - metrics["eval/cond_acc"]) * 100)
    assert all(m["asked"] == labels[m["index"]] for m in misread)
    assert f"misread               {len(misread)} samples" in result.stdout
    assert (tmp_path / "eval" / "misread.png").is_file() == bool(misread)


def test_evaluate_with_several_classifiers_reports_their_mean_and_each(workspace, tmp_path):
    from tinyldm.data import DigitsDataModule

    dm = DigitsDataModule(name="mnist_5k", source="bundled", seed=0)
    dm.setup()
    np.savez(
        tmp_path / "real.npz",
        images=to_uint8(dm.val_dataset.tensors[0][:100], dm.pad),
        labels=dm.val_dataset.tensors[1][:100].numpy(),
    )
    result = run_script(
        "evaluate.py",
        [
            f"samples={tmp_path / 'real.npz'}",
            "dataset=mnist_5k",
            "evaluation.classifier_epochs=1",
            "evaluation.classifier_members=2",
            *path_overrides(workspace["tmp"]),
        ],
        tmp_path / "eval",
    )
    metrics = read_metrics(tmp_path / "eval")
    assert metrics["eval/classifier_members"] == 2
    assert metrics["eval/fid"] == pytest.approx((metrics["eval/member0_fid"] + metrics["eval/member1_fid"]) / 2)
    assert metrics["eval/member0_fid"] != pytest.approx(metrics["eval/member1_fid"], rel=1e-3)
    assert "(members " in result.stdout
    votes = [m["votes"] for m in metrics["eval/misread"]]  # each misread sample: how many of the two read it wrong
    wrong_readings = sum(round((1 - metrics[f"eval/member{i}_cond_acc"]) * 100) for i in (0, 1))
    assert set(votes) <= {1, 2} and sum(votes) == wrong_readings


def test_guidance_sweep_writes_csv_and_plot(workspace, tmp_path):
    sweep_dir = tmp_path / "sweep"
    command = [
        "-m",
        f"ckpt={workspace['ckpt']}",
        "guidance.scale=1,3",
        "sampler=dpmpp_2m_sde",
        "sampler.steps=3",
        "sampler.timestep_spacing=logsnr",  # the grid and the noise window reach every point's record
        "sampler.logsnr_range=[-3,3]",
        "sampler.noise_interval=[500,999]",
        "evaluation.n_per_class=5",
        "evaluation.classifier_epochs=1",
        "logger=wandb",
        f"hydra.sweep.dir={sweep_dir}",
        *path_overrides(workspace["tmp"]),
    ]
    run_script("evaluate.py", command, tmp_path / "unused")
    with (sweep_dir / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert sorted(float(r["eval/guidance_scale"]) for r in rows) == [1.0, 3.0]
    assert all(r["status"] == "ok" and float(r["eval/fid"]) > 0 for r in rows)
    assert all(r["eval/timestep_spacing"] == "logsnr" and r["eval/logsnr_range"] == "[-3, 3]" for r in rows), rows
    assert all(r["eval/sampler_kind"] == "dpmpp_2m_sde" and r["eval/noise_interval"] == "[500, 999]" for r in rows)
    assert (sweep_dir / "summary.png").is_file()
    # every point is its own (offline) W&B run, and the whole sweep lands in W&B as a table
    assert all(list((sweep_dir / str(job) / "wandb").glob("offline-run-*")) for job in (0, 1))
    summary_runs = list((sweep_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(summary_runs) == 1 and b"sweep/summary" in summary_runs[0].read_bytes()


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: np.savez(p, pictures=np.zeros((60, 28, 28), np.uint8)), "images"),
        (lambda p: np.savez(p, images=np.zeros((60, 32, 32), np.uint8), labels=np.zeros(60, np.int64)), "28"),
        (lambda p: np.savez(p, images=np.zeros((60, 28, 28), np.float32), labels=np.zeros(60, np.int64)), "uint8"),
        (lambda p: np.savez(p, images=np.zeros((60, 28, 28), np.uint8), labels=np.full(60, 11, np.int64)), "11|range"),
        (lambda p: np.savez(p, images=np.zeros((3, 28, 28), np.uint8), labels=np.zeros(3, np.int64)), "3"),
    ],
)
def test_evaluate_rejects_malformed_samples(compose, workspace, tmp_path, make, match):
    from tinyldm.tasks import evaluate

    path = tmp_path / "bad.npz"
    make(path)
    cfg = compose(
        [f"samples={path}", "evaluation.classifier_epochs=1", f"paths.cache_dir={workspace['tmp']}/cache"],
        config_name="evaluate",
    )
    with pytest.raises(ValueError, match=match):
        evaluate.run(cfg)


def test_float_samples_are_refused_before_the_classifier_trains(compose, tmp_path):
    from tinyldm.tasks import evaluate

    path = tmp_path / "floats.npz"
    np.savez(path, images=np.zeros((60, 28, 28), np.float32), labels=np.zeros(60, np.int64))
    cfg = compose([f"samples={path}", f"paths.cache_dir={tmp_path}/fresh_cache"], config_name="evaluate")
    with pytest.raises(ValueError, match="uint8"):
        evaluate.run(cfg)
    assert not (tmp_path / "fresh_cache").exists(), "a classifier was trained before the samples were checked"


def test_evaluate_never_replaces_an_earlier_result(compose, tmp_path):
    from tinyldm.tasks import evaluate

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"eval/fid": 1.0}')
    cfg = compose([f"samples={tmp_path}/any.npz"], config_name="evaluate")
    with pytest.raises(FileExistsError, match="metrics.json.*already exists"):
        evaluate.run(cfg)
    assert (run_dir / "metrics.json").read_text() == '{"eval/fid": 1.0}'
