"""A checkpoint is data: crafted files are refused before they run anything; real ones still load."""

from __future__ import annotations

import contextlib

import pytest
import torch

from tests.helpers.payloads import LEGACY_AUTOENCODER, LEGACY_DIFFUSION, pickle_payload, target_payload
from tinyldm.diffusion import SOLVERS, ClassifierFreeGuidance, DDIMSolver, NoiseSchedule
from tinyldm.diffusion.loss import DiffusionLoss
from tinyldm.lit.autoencoder_module import AutoencoderModule
from tinyldm.lit.diffusion_module import LatentDiffusionModule
from tinyldm.utils.checkpoints import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    read_checkpoint,
    require_stage,
    restore_module,
)
from tinyldm.utils.instantiate import LEGACY_TARGETS, UnsafeTargetError, check_file_targets, check_target


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
        cls(**cls.upgrade_hyperparameters(raw["hyper_parameters"]))  # ... and building from it runs the target
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
    [
        "tinyldm.autoencoders.VQVAE",
        "tinyldm.unet.UNet",
        "torch.optim.AdamW",
        "torch.optim.lr_scheduler.OneCycleLR",
        "tinyldm.diffusion.NoiseSchedule",
        "tinyldm.diffusion.DDIMSolver",
        "tinyldm.diffusion.ddim.DDIMSolver",  # what Solver.as_config() writes
        "tinyldm.diffusion.dpm_solver_sde.DPMSolver2MSDE",
        "tinyldm.diffusion.guidance.ClassifierFreeGuidance",
        "tinyldm.diffusion.AdaptiveProjectedGuidance",
        "tinyldm.diffusion.loss.DiffusionLoss",
        "tinyldm.diffusion.DiffusionSampler",  # an earlier release's sampler: converted, never built
    ],
)
def test_the_projects_own_targets_are_allowed(target):
    check_target(target, "checkpoint 'x.ckpt'")


@pytest.mark.parametrize("target", sorted(LEGACY_TARGETS))
def test_earlier_releases_class_names_are_allowed_though_they_name_no_class_now(target):
    """Earlier releases stored these; their configs are converted (never built), so a file may still name them."""
    import tinyldm.diffusion

    assert not hasattr(tinyldm.diffusion, target.rsplit(".", 1)[-1])  # nothing to build from them
    check_target(target, "checkpoint 'x.ckpt'")
    check_file_targets({"sampler": {"_target_": target, "kind": "ddim"}}, "f")


@pytest.mark.parametrize(
    "target",
    [
        "tinyldm.diffusion.DDIMScheduler.step",  # a legacy name is allowed only as itself
        "tinyldm.diffusion.ddim.DDIMScheduler",
        "tinyldm.diffusion.DiffusionSampler.__init__",
        "tinyldm.diffusion.DiffusionSamplers",
        "tinyldm.diffusion.sampling.sample",  # a project function, not a class
        "tinyldm.diffusion.sampling.split_legacy_sampler",
    ],
)
def test_lookalikes_of_legacy_or_current_targets_are_still_refused(target):
    with pytest.raises(UnsafeTargetError, match="only classes from tinyldm.*, torch.optim.*"):
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


def _restore_diffusion(path=LEGACY_DIFFUSION) -> LatentDiffusionModule:
    return restore_module(LatentDiffusionModule, require_stage(path, "diffusion"), path).eval()


@pytest.mark.parametrize(
    "sampler",
    [{"kind": "ddpm", "steps": 4}, {"kind": "ddim", "steps": 4, "eta": 0.5}, {"kind": "dpmpp_2m", "steps": 4}],
    ids=["ddpm", "ddim-eta", "dpmpp_2m"],
)
def test_previous_release_scheduler_config_is_translated_and_samples_with_every_solver(sampler):
    """Its stored ``scheduler`` is a DDPMScheduler (solver) config; the module reads it as the noise schedule.

    Its ``sampler`` (one DiffusionSampler config: the solver and the guidance) becomes a solver and a guidance."""
    stored = torch.load(LEGACY_DIFFUSION, weights_only=True)["hyper_parameters"]
    assert stored["scheduler"]["_target_"] == "tinyldm.diffusion.DDPMScheduler"  # the file says what it said
    assert stored["sampler"]["_target_"] == "tinyldm.diffusion.DiffusionSampler"
    model = _restore_diffusion()
    assert model.hparams.scheduler["_target_"] == "tinyldm.diffusion.NoiseSchedule"  # read as this release's
    assert isinstance(model.noise_schedule, NoiseSchedule)
    assert model.noise_schedule.config == {
        "num_train_timesteps": 1000,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "prediction_type": "epsilon",
    }
    assert model.solver == DDIMSolver(steps=50, eta=0.0)
    assert model.guidance == ClassifierFreeGuidance(scale=3.0)
    assert model.loss == DiffusionLoss(min_snr_gamma=5)
    settings = {key: value for key, value in sampler.items() if key != "kind"}
    draw = [
        model.sample(
            torch.tensor([3, 7]),
            generator=torch.Generator().manual_seed(0),
            solver=SOLVERS[sampler["kind"]](**settings),
            guidance=ClassifierFreeGuidance(scale=2.0),
        )
        for _ in range(2)
    ]
    assert draw[0].shape == (2, 1, 32, 32) and torch.isfinite(draw[0]).all()
    assert torch.equal(draw[0], draw[1])


def test_previous_release_clip_sample_keeps_its_effect(tmp_path):
    """A stored scheduler.clip_sample=true moves to the checkpoint's solver, and a solver changed from it keeps it."""
    from tinyldm.pipeline import LatentDiffusionPipeline

    checkpoint = torch.load(LEGACY_DIFFUSION, weights_only=True)
    checkpoint["hyper_parameters"]["scheduler"].update(clip_sample=True, clip_sample_range=0.5)
    path = tmp_path / "clipped.ckpt"
    torch.save(checkpoint, path)
    model = _restore_diffusion(path)
    assert (model.solver.clip_sample, model.solver.clip_sample_range) == (True, 0.5)
    labels = torch.tensor([1])
    solver, _ = LatentDiffusionPipeline(model).sampling_for(sampler={"steps": 2})  # sampler.steps=2
    assert solver == DDIMSolver(steps=2, clip_sample=True, clip_sample_range=0.5)
    clipped = model.sample(labels, generator=torch.Generator().manual_seed(0), solver=solver)
    unclipped = _restore_diffusion().sample(
        labels, generator=torch.Generator().manual_seed(0), solver=DDIMSolver(steps=2)
    )
    assert not torch.equal(clipped, unclipped)  # the clipping really happens


def test_current_checkpoint_hyper_parameters_restore(compose, tmp_path):
    """What a run writes now (scheduler: a NoiseSchedule config) passes the target check and rebuilds its parts."""
    from tests.helpers.modules import diffusion_module, save_diffusion_checkpoint

    module = diffusion_module(compose(["debug=smoke", "model=ae"]))
    assert module.hparams.scheduler["_target_"] == "tinyldm.diffusion.NoiseSchedule"
    path = tmp_path / "current.ckpt"
    save_diffusion_checkpoint(module, path)
    assert module.hparams.sampler["_target_"].startswith("tinyldm.diffusion.")
    restored = _restore_diffusion(path)
    assert restored.noise_schedule.config == module.noise_schedule.config
    assert restored.solver == module.solver and restored.guidance == module.guidance
    assert restored.loss == module.loss
    assert LatentDiffusionModule.upgrade_hyperparameters(dict(module.hparams)) == dict(module.hparams)  # nothing to do


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
    with pytest.raises(
        CorruptCheckpointError, match=r"stripped\.ckpt.*malformed.*hyper-parameters lack \['autoencoder'"
    ):
        restore_module(LatentDiffusionModule, require_stage(path, "diffusion"), path)


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    checkpoint = torch.load(LEGACY_AUTOENCODER, weights_only=True)
    checkpoint["hyper_parameters"]["autoencoder"]["latent_channels"] = 8
    path = tmp_path / "mismatch.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CorruptCheckpointError, match=r"mismatch\.ckpt.*weights do not fit"):
        restore_module(AutoencoderModule, require_stage(path, "autoencoder"), path)
