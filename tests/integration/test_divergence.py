"""A loss that turns NaN stops training with a clear message and keeps the last good checkpoint."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize(
    ("stage_args", "module", "stage"),
    [
        (["stage=autoencoder", "model.training.max_epochs=2"], "AutoencoderModule", "autoencoder"),
        (
            ["stage=all", "diffusion.grid.every_n_steps=0", "evaluation.enabled=false"],
            "LatentDiffusionModule",
            "diffusion",
        ),
    ],
    ids=["stage1", "stage2"],
)
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(compose, tmp_path, stage_args, module, stage):
    from tinyldm.tasks import train

    run_dir = tmp_path / "run"  # the compose fixture's paths.output_dir
    cfg = compose(
        [
            "model=ae",
            "debug=smoke",
            "logger=csv",
            *stage_args,
            "+callbacks.poison._target_=tests.helpers.callbacks.PoisonWeights",
            "+callbacks.poison.epoch=1",
            f"+callbacks.poison.module={module}",
        ]
    )
    with pytest.raises(FloatingPointError, match="loss became nan at step .* The last good checkpoint is kept"):
        train.run(cfg)

    last = torch.load(run_dir / "checkpoints" / stage / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0  # written at the end of the last good epoch, not overwritten by the failure
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert not (run_dir / "metrics.json").exists()  # a failed run does not report final metrics
