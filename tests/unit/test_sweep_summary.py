"""Sweep summary: points are labelled by the overrides that vary; the CSV + plot are written from job dirs."""

from __future__ import annotations

import csv
import json

from omegaconf import OmegaConf

from tinyldm.callbacks.sweep_summary import collect_sweep, plot_fid_vs_accuracy, point_labels, write_csv


def test_labels_name_only_the_overrides_that_vary():
    rows = [
        {"job": 0, "override:model": "ae", "override:unet.transformer_depth": "1", "override:experiment": "mnist_cond"},
        {
            "job": 1,
            "override:model": "vae",
            "override:unet.transformer_depth": "2",
            "override:experiment": "mnist_cond",
        },
    ]
    assert point_labels(rows) == ["model=ae, transformer_depth=1", "model=vae, transformer_depth=2"]
    assert point_labels([{"job": 3}]) == ["job 3"]


def test_sweep_dir_becomes_csv_rows_and_plot(tmp_path):
    for job, (scale, fid) in enumerate([(1.0, 6.0), (3.0, 4.0)]):
        job_dir = tmp_path / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create([f"sampler.guidance_scale={scale}"]), job_dir / ".hydra" / "overrides.yaml")
        (job_dir / "metrics.json").write_text(
            json.dumps({"eval/fid": fid, "eval/cond_acc": scale / 4, "eval/fid_floor": 1.0})
        )
    (tmp_path / "2" / ".hydra").mkdir(parents=True)  # a job that crashed before writing metrics

    rows = collect_sweep(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    with write_csv(rows, tmp_path / "summary.csv").open() as handle:
        assert [r["override:sampler.guidance_scale"] for r in csv.DictReader(handle)] == ["1.0", "3.0", ""]
    assert plot_fid_vs_accuracy(rows, tmp_path / "summary.png").stat().st_size > 1000
