"""Build real stage-2 modules from composed configs (tests only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf


def diffusion_module(cfg: DictConfig, latent_shape: Sequence[int] = (4, 8, 8), seed: int = 0, **hparams: Any):
    """A ``LatentDiffusionModule`` as ``cfg`` describes it, on ``latent_shape``, initialised from ``seed``."""
    from tinyldm.lit.diffusion_module import LatentDiffusionModule
    from tinyldm.tasks.validation import unet_config_for

    def plain(node):
        return OmegaConf.to_container(node, resolve=True)

    torch.manual_seed(seed)
    return LatentDiffusionModule(
        autoencoder=plain(cfg.model.net),
        unet=plain(OmegaConf.create(unet_config_for(cfg.unet, latent_shape))),
        conditioner=plain(cfg.conditioner),
        scheduler=plain(cfg.scheduler),
        sampler=plain(cfg.sampler),
        optimizer=plain(cfg.diffusion.optimizer),
        latent_shape=list(latent_shape),
        **hparams,
    )
