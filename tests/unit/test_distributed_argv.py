"""DDP children of a Hydra multirun job re-run that one job, not the sweep."""

from __future__ import annotations

from pathlib import Path

from tinyldm.utils.distributed import remember_job, rewrite_child_argv


def test_child_argv_is_the_parents_single_job(monkeypatch, tmp_path):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    remember_job(["model=vae", "unet.transformer_depth=2"], tmp_path / "multirun" / "4")
    parent_argv = ["train.py", "-m", "model=ae,vae", "unet.transformer_depth=0,1,2", 'hydra.run.dir="outputs/x"']
    assert rewrite_child_argv(list(parent_argv)) == parent_argv  # rank zero is untouched

    monkeypatch.setenv("LOCAL_RANK", "1")
    child = rewrite_child_argv(list(parent_argv))
    assert "-m" not in child and "model=ae,vae" not in child
    assert child[1:3] == ["model=vae", "unet.transformer_depth=2"]
    assert f"hydra.run.dir={Path(tmp_path / 'multirun' / '4')}" in child
    assert "hydra.output_subdir=null" in child
