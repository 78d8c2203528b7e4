"""``python train.py``: stage 1, stage 2 or both, into one run directory.

A run directory holds ``.hydra/`` (the composed config), ``resolved_config.yaml``,
``checkpoints/{autoencoder,diffusion}.ckpt``, image grids and ``metrics.json``. A directory that
already holds a run is only ever continued (``resume=true`` / ``ckpt_path=``), never overwritten.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from tinyldm.config_checks import check_train_config, check_train_parts
from tinyldm.training.resume import find_resume_checkpoint, refuse_existing_run
from tinyldm.training.stage1 import autoencoder_for_run, stage1_module, store_resumed_in_cache, train_autoencoder
from tinyldm.training.stage2 import train_diffusion
from tinyldm.utils.distributed import is_ddp_child, is_global_zero, remember_job
from tinyldm.utils.files import write_json, write_text
from tinyldm.utils.hydra_job import run_dir_of
from tinyldm.utils.instantiate import build
from tinyldm.utils.loggers import RunLoggers

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train what ``cfg.stage`` asks for; return the run's final metrics (also in metrics.json)."""
    from_file = check_train_config(cfg)  # every bad value is refused before any data are loaded
    run_dir = run_dir_of(cfg)
    resume = find_resume_checkpoint(cfg, run_dir)
    if resume is None and not is_ddp_child():
        refuse_existing_run(run_dir)
    resume_stage = resume.stage if resume else None
    L.seed_everything(int(cfg.seed), workers=True)
    datamodule = build(cfg.dataset)
    trains_stage1 = cfg.stage == "autoencoder" or resume_stage == "autoencoder"
    stage1, stage1_file = stage1_module(cfg, run_dir, datamodule.pad, trains_stage1, resume_stage, from_file)
    check_train_parts(cfg, stage1, datamodule)
    run_dir.mkdir(parents=True, exist_ok=True)
    if HydraConfig.initialized() and not is_ddp_child():
        remember_job(HydraConfig.get().overrides.task, run_dir)

    loggers = RunLoggers(
        cfg.get("logger"),
        run_config=OmegaConf.to_container(cfg, resolve=True),
        wandb_run_id=resume.wandb_run_id if resume else None,
    )
    metrics: dict[str, Any] = {"stage": cfg.stage, "model": cfg.model.name, "dataset": cfg.dataset.name}
    try:
        autoencoder_ckpt, reused = stage1_file, True
        if trains_stage1:
            result = train_autoencoder(stage1, cfg, run_dir, datamodule, loggers, resume=resume)
            autoencoder_ckpt, reused = result.checkpoint, False
            metrics.update(result.metrics)
            if cfg.stage == "all":
                store_resumed_in_cache(result, cfg, datamodule)
        elif stage1_file is None:
            result, reused = autoencoder_for_run(stage1, cfg, run_dir, datamodule, loggers)
            autoencoder_ckpt = result.checkpoint
            metrics.update(result.metrics)
        metrics.update({"autoencoder_ckpt": str(autoencoder_ckpt), "autoencoder_reused": reused})

        if cfg.stage in ("diffusion", "all"):
            stage2_resume = resume if resume_stage == "diffusion" else None
            result = train_diffusion(cfg, run_dir, datamodule, stage1, autoencoder_ckpt, loggers, resume=stage2_resume)
            metrics.update(result.metrics)
            metrics["diffusion_ckpt"] = str(result.checkpoint)
        if resume is not None:
            metrics["resumed_from"] = str(resume.path)
    except BaseException:
        loggers.finish("failed")
        raise
    loggers.finish()

    datamodule.setup("fit")
    metrics["dataset_source"] = datamodule.source_used
    if is_global_zero():
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved["dataset"]["source_used"] = datamodule.source_used
        write_text(run_dir / "resolved_config.yaml", OmegaConf.to_yaml(resolved))
        metrics = write_json(run_dir / "metrics.json", metrics)
        log.info("Run finished; outputs in %s", run_dir)
    return metrics
