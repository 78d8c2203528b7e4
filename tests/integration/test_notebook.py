"""notebooks/explore.ipynb executes top to bottom on a smoke run (so it never rots)."""

from __future__ import annotations

import csv

import pytest

from tests.helpers.runs import REPO, path_overrides, run_script

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_explore_notebook_runs_on_a_smoke_run(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_script(
        "train.py",
        [
            "model=ae",
            "debug=smoke",
            "logger=none",
            "evaluation.enabled=false",
            "diffusion.grid.every_n_steps=0",
            *path_overrides(tmp_path),
        ],
        run_dir,
    )
    sweep_csv = tmp_path / "summary.csv"
    with sweep_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows(
            [
                ["job", "override:guidance.scale", "eval/cond_acc", "eval/fid", "status"],
                [0, 1.0, 0.8, 20.0, "ok"],
                [1, 3.0, 0.95, 15.0, "ok"],
            ]
        )
    notebook = nbformat.read(REPO / "notebooks" / "explore.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "outputs must be stripped in git"
    )
    monkeypatch.setenv("RUN_DIR", str(run_dir))
    monkeypatch.setenv("SWEEP_CSV", str(sweep_csv))
    monkeypatch.setenv("SAMPLER_STEPS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("run dir" in o.get("text", "") for o in outputs)
