"""A stage-2 run interrupted after one epoch and resumed ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import path_overrides, run_script


@pytest.fixture(scope="module")
def stage1_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume_stage1")
    run_script("train.py", ["stage=autoencoder", "model=ae", "debug=smoke", "logger=none", *path_overrides(tmp)], tmp / "run")
    return tmp / "run" / "checkpoints" / "autoencoder.ckpt"


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_resumed_run_matches_uninterrupted_run(tmp_path, stage1_checkpoint):
    common = ["stage=diffusion", f"autoencoder_ckpt={stage1_checkpoint}", "model=ae", "debug=smoke", "logger=none",
              "diffusion.max_epochs=2", "diffusion.grid.every_n_epochs=0", "evaluation.enabled=false", *path_overrides(tmp_path)]
    full = tmp_path / "full"
    run_script("train.py", common, full)

    interrupted = tmp_path / "interrupted"
    run_script("train.py", [*common, "+callbacks.stop._target_=tests.helpers.callbacks.StopAfterEpochs", "+callbacks.stop.epochs=1"],
               interrupted)
    last = interrupted / "checkpoints" / "diffusion" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0
    run_script("train.py", [*common, "resume=true"], interrupted)

    expected, resumed = _state(full / "checkpoints" / "diffusion.ckpt"), _state(interrupted / "checkpoints" / "diffusion.ckpt")
    assert expected.keys() == resumed.keys()
    assert any(k.startswith("ema.") for k in expected)
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key


def test_resume_without_checkpoint_is_a_clear_error(compose):
    from tinyldm.tasks import train

    with pytest.raises(FileNotFoundError, match="resume=true found no last.ckpt"):
        train.run(compose(["stage=autoencoder", "debug=smoke", "logger=none", "resume=true"]))
