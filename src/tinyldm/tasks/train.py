"""``python train.py``: stage 1, stage 2 or both, into one run directory.

A run directory holds ``.hydra/`` (the composed config), ``resolved_config.yaml``,
``checkpoints/{autoencoder,diffusion}.ckpt``, image grids and ``metrics.json``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
from hydra.core.hydra_config import HydraConfig
from tinyldm.utils.instantiate import build
from omegaconf import DictConfig, OmegaConf

from tinyldm.tasks.builders import RunLoggers
from tinyldm.tasks.stage1 import autoencoder_for_run, cached_autoencoder_path, store_in_cache, train_autoencoder
from tinyldm.tasks.stage2 import train_diffusion
from tinyldm.tasks.validation import check_stage, check_stage2_parts
from tinyldm.utils.distributed import is_ddp_child, remember_job
from tinyldm.utils.checkpoints import checkpoint_stage, read_checkpoint, wandb_run_id
from tinyldm.utils.run_files import update_metrics_file

log = logging.getLogger(__name__)


def run_dir_of(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train what ``cfg.stage`` asks for; return the run's final metrics (also in metrics.json)."""
    check_stage(cfg)
    L.seed_everything(int(cfg.seed), workers=True)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if HydraConfig.initialized() and not is_ddp_child():
        remember_job(HydraConfig.get().overrides.task, run_dir)

    datamodule = build(cfg.dataset)
    if cfg.stage in ("diffusion", "all"):  # stage-2 config errors must surface before stage 1 trains
        latent_shape = build(cfg.model.net).latent_shape(datamodule.image_shape)
        check_stage2_parts(cfg, latent_shape, datamodule.num_classes)

    resume = find_resume_checkpoint(cfg, run_dir)
    resume_from, resume_stage = (resume.path, resume.stage) if resume else (None, None)
    loggers = RunLoggers(cfg.get("logger"), run_config=OmegaConf.to_container(cfg, resolve=True),
                         wandb_run_id=resume.wandb_run_id if resume else None)
    metrics: dict[str, Any] = {"stage": cfg.stage, "model": cfg.model.name, "dataset": cfg.dataset.name}
    try:
        autoencoder_ckpt, reused = None, True
        if cfg.stage == "autoencoder" or resume_stage == "autoencoder":
            result = train_autoencoder(cfg, run_dir, datamodule, loggers, ckpt_path=resume_from)
            autoencoder_ckpt, reused = result.checkpoint, False
            metrics.update(result.metrics)
            if cfg.stage == "all":
                store_in_cache(result, cached_autoencoder_path(cfg), cfg)
        elif cfg.get("autoencoder_ckpt"):
            autoencoder_ckpt = Path(cfg.autoencoder_ckpt)
        elif resume_stage == "diffusion" and (run_dir / "checkpoints" / "autoencoder.ckpt").exists():
            autoencoder_ckpt = run_dir / "checkpoints" / "autoencoder.ckpt"  # written by the run being resumed
        else:
            result, reused = autoencoder_for_run(cfg, run_dir, datamodule, loggers)
            autoencoder_ckpt = result.checkpoint
            metrics.update(result.metrics)
        metrics.update({"autoencoder_ckpt": str(autoencoder_ckpt), "autoencoder_reused": reused})

        if cfg.stage in ("diffusion", "all"):
            stage2_resume = resume_from if resume_stage == "diffusion" else None
            result = train_diffusion(cfg, run_dir, datamodule, autoencoder_ckpt, loggers, ckpt_path=stage2_resume)
            metrics.update(result.metrics)
            metrics["diffusion_ckpt"] = str(result.checkpoint)
        if resume_from is not None:
            metrics["resumed_from"] = str(resume_from)
    except BaseException:
        loggers.finish("failed")
        raise
    loggers.finish()

    datamodule.setup("fit")
    metrics["dataset_source"] = datamodule.source_used
    if is_rank_zero():
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved["dataset"]["source_used"] = datamodule.source_used
        (run_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(resolved))
        metrics = update_metrics_file(run_dir / "metrics.json", metrics)
        log.info("Run finished; outputs in %s", run_dir)
    return metrics


class ResumePoint(NamedTuple):
    path: Path
    stage: str  # the stage that wrote the checkpoint: autoencoder | diffusion
    wandb_run_id: str | None  # the W&B run to continue (None if the run had no W&B logger)


def find_resume_checkpoint(cfg: DictConfig, run_dir: Path) -> ResumePoint | None:
    """The checkpoint to resume from (``ckpt_path=PATH`` or ``resume=true``), None for a fresh run."""
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
    elif cfg.get("resume"):
        candidates = [run_dir / "checkpoints" / stage / "last.ckpt" for stage in ("diffusion", "autoencoder")]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            raise FileNotFoundError(
                f"resume=true found no last.ckpt under {run_dir / 'checkpoints'}; pass hydra.run.dir=<the run to "
                "resume> or ckpt_path=PATH"
            )
    else:
        return None
    checkpoint = read_checkpoint(path)
    stage = checkpoint_stage(checkpoint)
    if stage not in ("autoencoder", "diffusion"):
        raise ValueError(f"ckpt_path={str(path)!r} is not a tinyldm training checkpoint (no stage stamp)")
    if stage == "diffusion" and cfg.stage == "autoencoder":
        raise ValueError(f"ckpt_path={str(path)!r} is a diffusion checkpoint but stage=autoencoder")
    log.info("Resuming the %s stage from %s", stage, path)
    return ResumePoint(path, stage, wandb_run_id(checkpoint))


def optimized_metric(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The value a hyperparameter sweeper minimises/maximises (``optimized_metric`` in the config)."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} is not among the run's metrics: {sorted(metrics)}")
    return float(metrics[name])
