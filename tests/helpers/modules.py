"""Build real stage-2 modules from composed configs (tests only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf


def diffusion_module(cfg: DictConfig, latent_shape: Sequence[int] = (4, 8, 8), seed: int = 0, **diffusion: Any):
    """The untrained ``LatentDiffusionModule`` ``cfg`` describes (with ``diffusion.*`` overrides), from ``seed``.

    Overrides merge into ``cfg.diffusion``: nested keys stay nested, e.g. ``loss={"min_snr_gamma": None}`` for
    ``diffusion.loss.min_snr_gamma=null`` (the loss's other settings keep the config's values)."""
    from tinyldm.training.stage2 import module_from_config

    cfg = OmegaConf.merge(cfg, {"diffusion": diffusion}) if diffusion else cfg
    torch.manual_seed(seed)
    return module_from_config(cfg, latent_shape)


def save_diffusion_checkpoint(module, path) -> None:
    """Write ``module`` as a stage-stamped stage-2 checkpoint: what a run's ``diffusion.ckpt`` holds."""
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "tinyldm": {"stage": "diffusion", "version": "test"},
        },
        path,
    )
