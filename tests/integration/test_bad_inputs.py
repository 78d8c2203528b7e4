"""Configuration mistakes are reported with a clear message before any training starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from tinyldm.tasks import train


def _run(compose, overrides):
    cfg = compose(["debug=smoke", "logger=none", *overrides])
    return train.run(cfg)


@pytest.mark.parametrize(
    "override,message",
    [
        ("conditioner.p_uncond=1.5", r"p_uncond.*1\.5.*\[0, 1\)"),
        ("conditioner.p_uncond=1.0", r"p_uncond.*\[0, 1\)"),
        ("unet.transformer_depth=-1", r"transformer_depth.*-1"),
        ("conditioner.tokens_per_class=0", r"tokens_per_class.*0"),
        ("guidance.scale=-2", r"scale must be a finite number in \[0, inf\), got -2"),
        ("stage=both", r"stage='both'.*\['autoencoder', 'diffusion', 'all'\]"),
        ("dataset.val_fraction=1.5", r"val_fraction"),
        ("unet.in_channels=3", r"unet.in_channels=3 does not match"),
        ("diffusion.loss.min_snr_gamma=-1", r"diffusion.loss.min_snr_gamma must be null.*> 0, got -1"),
        ("diffusion.ema_power=0", r"diffusion.ema_power=0 must be null \(warm-up EMA\) or a number > 0"),
        ("diffusion.guide_at=1.5", r"diffusion.guide_at=1.5 must be null \(no autoguidance guide\) or a number in"),
        ("guidance.autoguidance=2", r"guidance.autoguidance=2 needs a guide, but diffusion.guide_at is null"),
        ("guidance.autoguidance=0.5", r"autoguidance must be a finite number in \[1, inf\), got 0.5"),
        ("guidance.interval=[600,100]", r"interval=\[600, 100\] must be null or \[t_low, t_high\]"),
        (
            "diffusion.loss.timestep_sampling.distribution=beta",
            r"diffusion.loss.timestep_sampling.distribution='beta'; allowed: uniform, logit_normal",
        ),
        ("diffusion.ema_decay=1.0", r"diffusion.ema_decay=1.0 must be a number in \[0, 1\)"),
        ("sampler.steps=2000", r"sampler: steps=2000 exceeds the noise schedule's num_train_timesteps=1000"),
        ("sampler.clip_sample_range=0", r"clip_sample_range must be a finite number > 0, got 0"),
        ("diffusion.batch_size=0", r"diffusion.batch_size=0 is not allowed: it must be an integer >= 1"),
        ("diffusion.max_epochs=0", r"diffusion.max_epochs=0 is not allowed: it must be an integer >= 1"),
        (
            "model.training.batch_size=0",
            r"model.training.batch_size=0 is not allowed: it must be an integer >= 1 or null",
        ),
        ("model.training.max_epochs=0", r"model.training.max_epochs=0 is not allowed: it must be an integer >= 1"),
        ("diffusion.max_steps=5", r"diffusion.max_steps=5 and diffusion.max_epochs=2: set exactly one of them"),
        ("model.training.max_epochs=null", r"model.training.max_steps=None and model.training.max_epochs=None"),
        ("diffusion.val_every_n_steps=0", r"diffusion.val_every_n_steps=0 is not allowed"),
        ("+trainer.max_epochs=0", r"trainer.max_epochs=0 is not used: each stage sets its own length"),
        ("+trainer.max_steps=10", r"trainer.max_steps=10 is not used"),
        ("seed=-1", r"seed=-1 is not allowed: it must be an integer >= 0"),
        (
            "model.training.channels_last=yes please",
            r"model.training.channels_last='yes please' is not allowed: it must be true or false",
        ),
        ("diffusion.channels_last=2", r"diffusion.channels_last=2 is not allowed: it must be true or false"),
        ("diffusion.compile_unet=maybe", r"diffusion.compile_unet='maybe' is not allowed: it must be true or false"),
        ("evaluation.n_per_class=0", r"evaluation.n_per_class=0 is not allowed"),
        (
            "evaluation.classifier_members=0",
            r"evaluation.classifier_members=0 is not allowed: it must be an integer >= 1",
        ),
    ],
)
def test_bad_config_values_fail_before_training(compose, tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        _run(compose, [override])
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_values_are_refused_before_data_are_read(compose, monkeypatch):
    """The checks run before the dataset is touched, let alone a model trained."""
    from tinyldm.data.datamodule import DigitsDataModule

    def no_data(*args, **kwargs):
        raise AssertionError("data were loaded before the start-up checks")

    monkeypatch.setattr(DigitsDataModule, "setup", no_data)
    with pytest.raises(ValueError, match="diffusion.batch_size=0"):
        _run(compose, ["diffusion.batch_size=0"])


def test_identity_autoencoder_needs_no_stage1_epochs(compose):
    from tinyldm.config_checks import check_train_config

    check_train_config(compose(["debug=smoke", "model=identity"]))  # model.training.max_epochs=0 is fine here


def test_stage1_checkpoint_without_hyper_parameters(compose, tmp_path):
    import torch

    from tests.helpers.payloads import LEGACY_AUTOENCODER

    checkpoint = torch.load(LEGACY_AUTOENCODER, weights_only=True)
    del checkpoint["hyper_parameters"]
    stripped = tmp_path / "stripped.ckpt"
    torch.save(checkpoint, stripped)
    with pytest.raises(ValueError, match=r"stripped\.ckpt.*malformed.*hyper-parameters lack"):
        _run(compose, ["stage=diffusion", f"autoencoder_ckpt={stripped}"])


def test_stage_diffusion_without_checkpoint(compose):
    with pytest.raises(ValueError, match="autoencoder_ckpt"):
        _run(compose, ["stage=diffusion"])


def test_missing_stage1_checkpoint(compose, tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist.ckpt"):
        _run(compose, ["stage=diffusion", f"autoencoder_ckpt={tmp_path}/does-not-exist.ckpt"])


def test_stage1_path_that_is_not_a_checkpoint(compose, tmp_path):
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        _run(compose, ["stage=diffusion", f"autoencoder_ckpt={bogus}"])


def test_stage2_checkpoint_given_as_stage1(compose, tmp_path):
    import torch

    fake_stage2 = tmp_path / "diffusion.ckpt"
    torch.save({"state_dict": {}, "tinyldm": {"stage": "diffusion", "version": "0"}}, fake_stage2)
    with pytest.raises(ValueError, match="is a diffusion \\(stage 2\\) checkpoint"):
        _run(compose, ["stage=diffusion", f"autoencoder_ckpt={fake_stage2}"])


def test_unknown_dataset_name(compose):
    with pytest.raises(ValueError, match="cifar"):
        _run(compose, ["dataset.name=cifar"])


def test_missing_local_files_with_torchvision_source(compose, tmp_path, monkeypatch):
    import torchvision

    def no_network(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    with pytest.raises(RuntimeError, match="dataset.root|mnist_5k"):
        _run(compose, ["dataset=mnist", "dataset.source=torchvision", "stage=autoencoder"])
    assert Path(tmp_path).exists()


@pytest.mark.parametrize(("depth", "warned"), [(0, True), (1, False)])
def test_class_conditioning_without_cross_attention_warns(compose, caplog, depth, warned):
    from tinyldm.config_checks import check_stage2_parts
    from tinyldm.training.stage1 import new_autoencoder_module

    cfg = compose(["debug=smoke", "conditioner=class", f"unet.transformer_depth={depth}"])
    datamodule = instantiate(cfg.dataset)
    with caplog.at_level("WARNING", logger="tinyldm.config_checks"):
        check_stage2_parts(cfg, new_autoencoder_module(cfg, Path(cfg.paths.output_dir), datamodule.pad), datamodule)
    assert ("no cross-attention" in caplog.text) is warned
