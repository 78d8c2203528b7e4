"""Every config group option composes, and every model x dataset pair builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers.runs import CONFIG_DIR

GROUPS = [
    "dataset",
    "model",
    "scheduler",
    "sampler",
    "unet",
    "conditioner",
    "diffusion",
    "trainer",
    "logger",
    "callbacks",
    "debug",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(compose, group, option):
    cfg = compose([f"{group}={option}"])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.stage == "all"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose_in_the_users_form(compose, experiment):
    cfg = compose(["model=vqvae", f"+experiment={experiment}"])
    OmegaConf.resolve(cfg)
    assert cfg.model.name == "vqvae"
    assert cfg.dataset.name in {"mnist", "fashion_mnist"}


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("dataset", options("dataset"))
def test_every_model_dataset_pair_instantiates(compose, model, dataset):
    cfg = compose([f"model={model}", f"dataset={dataset}"])
    datamodule = instantiate(cfg.dataset)
    autoencoder = instantiate(cfg.model.net)
    latent_shape = autoencoder.latent_shape(datamodule.image_shape)
    assert latent_shape[0] == autoencoder.latent_channels
    from tinyldm.config_checks import check_stage2_parts
    from tinyldm.training.stage1 import new_autoencoder_module

    stage1 = new_autoencoder_module(cfg, Path(cfg.paths.output_dir), datamodule.pad)
    unet = check_stage2_parts(cfg, stage1, datamodule).denoiser.unet
    assert unet.in_channels == latent_shape[0] and unet.sample_size == latent_shape[1]


def test_trainer_and_callbacks_instantiate(compose, tmp_path):
    from tinyldm.training.trainer import RunLoggers, build_trainer

    cfg = compose(["trainer=cpu", "logger=csv"])
    trainer = build_trainer(cfg, "autoencoder", tmp_path, RunLoggers(cfg.logger), max_epochs=1)
    assert trainer.max_epochs == 1
    assert trainer.checkpoint_callback.dirpath == str(tmp_path / "checkpoints" / "autoencoder")


def test_hydra_run_dirs_never_collide(compose):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="train", return_hydra_config=True)
    assert "%f" in OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert sweep["subdir"] == "${hydra.job.num}" and "%f" in sweep["dir"]


def test_slurm_launcher_composes(compose):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(
            config_name="train", overrides=["hydra/launcher=slurm", "trainer=ddp"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4
    assert cfg.trainer.strategy == "ddp"


def test_optuna_search_composes(compose):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(
            config_name="train",
            overrides=["hparams_search=mnist_optuna", "+experiment=mnist_cond"],
            return_hydra_config=True,
        )
    assert cfg.optimized_metric == "eval/fid"
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert set(cfg.hydra.sweeper.params) == {
        "diffusion.optimizer.lr",
        "unet.transformer_depth",
        "conditioner.tokens_per_class",
        "conditioner.p_uncond",
    }
