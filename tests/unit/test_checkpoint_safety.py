"""A checkpoint is data: crafted files are refused before they run anything; real ones still load."""

from __future__ import annotations

import contextlib

import pytest
import torch

from tests.helpers.payloads import LEGACY_AUTOENCODER, LEGACY_DIFFUSION, pickle_payload, target_payload
from tinyldm.lit.autoencoder_module import AutoencoderModule
from tinyldm.lit.diffusion_module import LatentDiffusionModule
from tinyldm.utils.checkpoints import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    read_checkpoint,
    require_stage,
    restore_module,
)
from tinyldm.utils.instantiate import UnsafeTargetError, check_file_targets, check_target


@pytest.mark.parametrize("stage", ["autoencoder", "diffusion"])
def test_pickle_payload_is_refused_without_running(tmp_path, stage):
    marker = tmp_path / "marker"
    path = pickle_payload(stage, tmp_path / "evil.ckpt", marker)
    torch.load(path, weights_only=False)  # the payload is real: a careless load runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt.*is unsafe.*GLOBAL exec"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(("stage", "cls"), [("autoencoder", AutoencoderModule), ("diffusion", LatentDiffusionModule)])
def test_target_payload_is_refused_before_anything_is_built(tmp_path, stage, cls):
    marker = tmp_path / "marker"
    path = target_payload(stage, tmp_path / "evil.ckpt", marker)
    raw = torch.load(path, weights_only=True)  # loads cleanly as data ...
    with contextlib.suppress(Exception):
        cls(**raw["hyper_parameters"])  # ... and building from it runs the target
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt.*unsafe.*tinyldm\.utils\.files\.write_text"):
        require_stage(path, stage)
    assert not marker.exists()


@pytest.mark.parametrize(
    "target",
    [
        "os.system",
        "builtins.exec",
        "tinyldm.utils.files.os.system",  # inside the namespace by name, os.system in fact
        "tinyldm.utils.files.write_text",  # a project function that writes files
        "torch.load",
        "tinyldm.__builtins__",
        "tinyldm.does_not_exist.Thing",
        "tinyldm..autoencoders",
        42,
    ],
)
def test_targets_outside_the_allow_list_are_refused(target):
    with pytest.raises(UnsafeTargetError, match="only classes from tinyldm.*, torch.optim.*"):
        check_target(target, "checkpoint 'x.ckpt'")


@pytest.mark.parametrize(
    "target",
    ["tinyldm.autoencoders.VQVAE", "tinyldm.unet.UNet", "torch.optim.AdamW", "torch.optim.lr_scheduler.OneCycleLR",
     "tinyldm.diffusion.DiffusionSampler"],
)
def test_the_projects_own_targets_are_allowed(target):
    check_target(target, "checkpoint 'x.ckpt'")


def test_nested_targets_and_interpolations_are_checked():
    good = {"net": {"_target_": "tinyldm.unet.UNet", "blocks": [{"_target_": "torch.optim.SGD"}]}}
    check_file_targets(good, "f")
    with pytest.raises(UnsafeTargetError, match="os.system"):
        check_file_targets({"a": [{"b": {"_target_": "os.system"}}]}, "f")
    with pytest.raises(UnsafeTargetError, match="interpolation"):
        check_file_targets({"lr": "${oc.env:HOME}"}, "f")


def test_previous_release_checkpoints_load_and_sample(tmp_path):
    stage1 = restore_module(AutoencoderModule, require_stage(LEGACY_AUTOENCODER, "autoencoder"), LEGACY_AUTOENCODER)
    model = restore_module(LatentDiffusionModule, require_stage(LEGACY_DIFFUSION, "diffusion"), LEGACY_DIFFUSION).eval()
    assert torch.equal(model.autoencoder.scale_factor, stage1.autoencoder.scale_factor)
    images = model.sample(torch.tensor([3, 7]), generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 32, 32) and torch.isfinite(images).all()


def test_truncated_checkpoint_is_corrupt_not_unsafe(tmp_path):
    data = LEGACY_AUTOENCODER.read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=r"truncated\.ckpt.*not a readable PyTorch checkpoint"):
        read_checkpoint(path)


def test_stage_stamp_without_hyper_parameters_is_a_clear_error(tmp_path):
    checkpoint = torch.load(LEGACY_DIFFUSION, weights_only=True)
    del checkpoint["hyper_parameters"]
    path = tmp_path / "stripped.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CorruptCheckpointError, match=r"stripped\.ckpt.*malformed.*hyper-parameters lack \['autoencoder'"):
        restore_module(LatentDiffusionModule, require_stage(path, "diffusion"), path)


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    checkpoint = torch.load(LEGACY_AUTOENCODER, weights_only=True)
    checkpoint["hyper_parameters"]["autoencoder"]["latent_channels"] = 8
    path = tmp_path / "mismatch.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CorruptCheckpointError, match=r"mismatch\.ckpt.*weights do not fit"):
        restore_module(AutoencoderModule, require_stage(path, "autoencoder"), path)
