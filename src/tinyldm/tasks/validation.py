"""Start-up checks: every config mistake we can detect is reported before any training starts.

Stage 1 may train for minutes before stage 2 is built, so stage-2 settings (UNet, conditioner,
scheduler, sampler) are instantiated here once, on the real latent shape, to surface their
errors immediately.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tinyldm.utils.instantiate import build
from omegaconf import DictConfig, OmegaConf

from tinyldm.diffusion.loss_weighting import validate_min_snr_gamma
from tinyldm.utils.checkpoints import require_stage

log = logging.getLogger(__name__)
STAGE_CHOICES = ("autoencoder", "diffusion", "all")


def check_stage(cfg: DictConfig) -> None:
    if cfg.stage not in STAGE_CHOICES:
        raise ValueError(f"stage={cfg.stage!r} is not one of {list(STAGE_CHOICES)}")
    if cfg.stage == "diffusion" and not cfg.get("autoencoder_ckpt"):
        raise ValueError("stage=diffusion needs autoencoder_ckpt=PATH (a stage-1 checkpoint); "
                         "or use stage=all to train/reuse stage 1 first")
    if cfg.get("autoencoder_ckpt"):
        require_stage(Path(cfg.autoencoder_ckpt), "autoencoder")


def unet_config_for(unet_cfg: DictConfig, latent_shape: Sequence[int]) -> dict:
    """Fill the UNet's in/out channels and sample size from the stage-1 latent; refuse mismatches."""
    channels, height, width = (int(s) for s in latent_shape)
    if height != width:
        raise ValueError(f"the UNet needs square latents, got {height}x{width}")
    config = OmegaConf.to_container(unet_cfg, resolve=False)
    config["context_dim"] = OmegaConf.select(unet_cfg, "context_dim")
    wanted = {"in_channels": channels, "out_channels": channels, "sample_size": height}
    for key, value in wanted.items():
        current = OmegaConf.select(unet_cfg, key, throw_on_missing=False)
        if current in (None, "???") or OmegaConf.is_missing(unet_cfg, key):
            config[key] = value
        elif int(current) != value:
            raise ValueError(
                f"unet.{key}={current} does not match the stage-1 latent shape {tuple(latent_shape)} "
                f"(needs {key}={value}); leave unet.{key} unset to take it from the autoencoder"
            )
    return config


def check_stage2_parts(cfg: DictConfig, latent_shape: Sequence[int], num_classes: int) -> dict:
    """Instantiate UNet, conditioner, scheduler and sampler once (cheap) so bad values fail now."""
    unet_config = unet_config_for(cfg.unet, latent_shape)
    unet = build(unet_config)
    conditioner = build(cfg.conditioner)
    model_classes = getattr(conditioner, "num_classes", 0)
    if conditioner.is_conditional and model_classes != num_classes:
        raise ValueError(f"conditioner.num_classes={model_classes} but dataset {cfg.dataset.name!r} has {num_classes} classes")
    if conditioner.is_conditional and unet.transformer_depth == 0:
        # legitimate as an ablation baseline, but easy to do by accident
        log.warning("unet.transformer_depth=0: the UNet has no cross-attention, so the class labels cannot reach it "
                    "and the model trains as an unconditional one (guidance has no effect)")
    build(cfg.scheduler)
    build(cfg.sampler)
    validate_min_snr_gamma(cfg.diffusion.get("min_snr_gamma"))
    return unet_config
