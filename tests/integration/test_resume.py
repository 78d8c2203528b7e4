"""Resume: an interrupted stage-2 run ends with the weights of an uninterrupted one, even past a bad last.ckpt."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.runs import path_overrides, run_script


@pytest.fixture(scope="module")
def stage1_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume_stage1")
    run_script(
        "train.py", ["stage=autoencoder", "model=ae", "debug=smoke", "logger=none", *path_overrides(tmp)], tmp / "run"
    )
    return tmp / "run" / "checkpoints" / "autoencoder.ckpt"


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_resumed_run_matches_uninterrupted_run(compose, tmp_path, caplog, stage1_checkpoint):
    """In-process runs (train.py is a three-line wrapper around train.run)."""
    from tinyldm.tasks import train

    common = [
        "stage=diffusion",
        f"autoencoder_ckpt={stage1_checkpoint}",
        "model=ae",
        "debug=smoke",
        "logger=none",
        "diffusion.max_epochs=2",
        "diffusion.grid.every_n_steps=0",
        "evaluation.enabled=false",
    ]
    full, interrupted = tmp_path / "full", tmp_path / "interrupted"
    train.run(compose([*common, f"paths.output_dir={full}"]))
    train.run(
        compose(
            [
                *common,
                f"paths.output_dir={interrupted}",
                "+callbacks.stop._target_=tests.helpers.callbacks.StopAfterEpochs",
                "+callbacks.stop.epochs=1",
            ]
        )
    )
    last = interrupted / "checkpoints" / "diffusion" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0
    last.write_bytes(last.read_bytes()[:5000])  # e.g. a full disk: resume falls back to the epoch checkpoint
    with caplog.at_level("WARNING", logger="tinyldm.tasks.train"):
        train.run(compose([*common, f"paths.output_dir={interrupted}", "resume=true"]))
    assert "last.ckpt, it is unreadable" in caplog.text

    expected, resumed = (
        _state(full / "checkpoints" / "diffusion.ckpt"),
        _state(interrupted / "checkpoints" / "diffusion.ckpt"),
    )
    assert expected.keys() == resumed.keys()
    assert any(k.startswith("ema.") for k in expected)
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key


def test_resume_without_checkpoint_is_a_clear_error(compose):
    from tinyldm.tasks import train

    with pytest.raises(FileNotFoundError, match="resume=true found no readable checkpoint"):
        train.run(compose(["stage=autoencoder", "debug=smoke", "logger=none", "resume=true"]))


def test_rerun_into_an_existing_run_directory_is_refused(compose, tmp_path):
    from tinyldm.tasks import train

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "autoencoder.ckpt").write_bytes(b"the earlier run's stage 1")
    with pytest.raises(FileExistsError, match="already holds a run.*resume=true"):
        train.run(compose(["stage=autoencoder", "debug=smoke", "logger=none"]))
    assert (run_dir / "checkpoints" / "autoencoder.ckpt").read_bytes() == b"the earlier run's stage 1"


@pytest.mark.parametrize("stage, key", [("diffusion", "diffusion"), ("autoencoder", "model.training")])
def test_a_step_budget_past_the_saved_schedule_is_refused_before_any_work(compose, tmp_path, stage, key):
    """The one-cycle schedule ends where the saved run's budget did: torch would stop the run there, late."""
    from tinyldm.tasks import train
    from tinyldm.training.resume import find_resume_checkpoint

    path = tmp_path / "last.ckpt"
    saved = {"state_dict": {}, "optimizer_states": [{}], "lr_schedulers": [{"total_steps": 10}], "loops": {}}
    torch.save({**saved, "epoch": 0, "global_step": 5, "tinyldm": {"stage": stage, "version": "test"}}, path)
    with pytest.raises(ValueError, match=rf"{key}.max_steps=20 runs past .* ends after 10 optimizer steps: resume"):
        train.run(compose(["model=ae", "logger=none", f"{key}.max_steps=20", f"ckpt_path={path}"]))
    assert not (tmp_path / "run").exists()

    same = find_resume_checkpoint(compose(["model=ae", f"{key}.max_steps=10", f"ckpt_path={path}"]), tmp_path / "run")
    assert same is not None and same.stage == stage


def test_resuming_another_model_configuration_is_refused_naming_what_differs(compose, tmp_path, stage1_checkpoint):
    """torch's own error is a raw key list from inside Lightning, after the latents are encoded."""
    from tests.helpers.modules import diffusion_module
    from tinyldm.tasks import train

    theirs = diffusion_module(compose(["model=ae", "debug=smoke", "unet.base_channels=32"]))
    path = tmp_path / "last.ckpt"
    torch.save(
        {
            "state_dict": theirs.state_dict(),
            "hyper_parameters": dict(theirs.hparams),
            "optimizer_states": [{}],
            "lr_schedulers": [],
            "loops": {},
            "epoch": 0,
            "global_step": 3,
            "tinyldm": {"stage": "diffusion", "version": "test"},
        },
        path,
    )
    run = ["stage=diffusion", f"autoencoder_ckpt={stage1_checkpoint}", "model=ae", "debug=smoke", "logger=none"]
    with pytest.raises(ValueError, match="its diffusion model is not this run's model") as refused:
        train.run(compose([*run, f"ckpt_path={path}"]))
    message = str(refused.value)
    assert "weights of another shape (denoiser.unet." in message and ") in the checkpoint, (" in message
    assert "unet.base_channels: 32 in the checkpoint, 16 here" in message
    assert not (tmp_path / "run" / "checkpoints" / "diffusion").exists()  # refused before training
