"""``python train.py``: stage 1, stage 2 or both, into one run directory.

A run directory holds ``.hydra/`` (the composed config), ``resolved_config.yaml``,
``checkpoints/{autoencoder,diffusion}.ckpt``, image grids and ``metrics.json``. A directory that
already holds a run is only ever continued (``resume=true`` / ``ckpt_path=``), never overwritten.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from tinyldm.tasks.builders import RunLoggers
from tinyldm.tasks.stage1 import autoencoder_for_run, store_resumed_in_cache, train_autoencoder
from tinyldm.tasks.stage2 import train_diffusion
from tinyldm.tasks.validation import check_train_config
from tinyldm.utils.checkpoints import CorruptCheckpointError, checkpoint_stage, read_checkpoint, wandb_run_id
from tinyldm.utils.distributed import is_ddp_child, is_global_zero, remember_job
from tinyldm.utils.files import write_json, write_text
from tinyldm.utils.instantiate import build

log = logging.getLogger(__name__)


def run_dir_of(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train what ``cfg.stage`` asks for; return the run's final metrics (also in metrics.json)."""
    check_train_config(cfg)  # every bad value is refused here, before any data are loaded
    run_dir = run_dir_of(cfg)
    resume = find_resume_checkpoint(cfg, run_dir)
    if resume is None and not is_ddp_child():
        refuse_existing_run(run_dir)
    L.seed_everything(int(cfg.seed), workers=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if HydraConfig.initialized() and not is_ddp_child():
        remember_job(HydraConfig.get().overrides.task, run_dir)

    datamodule = build(cfg.dataset)
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
                store_resumed_in_cache(result, cfg, datamodule)
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
    if is_global_zero():
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved["dataset"]["source_used"] = datamodule.source_used
        write_text(run_dir / "resolved_config.yaml", OmegaConf.to_yaml(resolved))
        metrics = write_json(run_dir / "metrics.json", metrics)
        log.info("Run finished; outputs in %s", run_dir)
    return metrics


def refuse_existing_run(run_dir: Path) -> None:
    """A run directory that already holds checkpoints or results is continued, never overwritten.

    Re-running into it would replace ``autoencoder.ckpt`` under an older ``diffusion.ckpt`` built on
    the previous autoencoder, and mix two runs' results in one ``metrics.json``.
    """
    checkpoints = run_dir / "checkpoints"
    held = [name for name, present in (("checkpoints/", checkpoints.is_dir() and any(checkpoints.iterdir())),
                                       ("metrics.json", (run_dir / "metrics.json").exists())) if present]
    if held:
        raise FileExistsError(
            f"run directory {str(run_dir)!r} already holds a run ({', '.join(held)}); pass resume=true to continue it, "
            "or leave hydra.run.dir unset (every run then gets a new directory)"
        )


# what Lightning needs to continue a fit where it stopped
RESUME_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "epoch", "global_step")


class ResumePoint(NamedTuple):
    path: Path
    stage: str  # the stage that wrote the checkpoint: autoencoder | diffusion
    wandb_run_id: str | None  # the W&B run to continue (None if the run had no W&B logger)


def resume_candidates(run_dir: Path) -> list[Path]:
    """A run's own checkpoints, most advanced first: stage 2 before stage 1, newest file first."""
    candidates: list[Path] = []
    for stage in ("diffusion", "autoencoder"):
        files = list((run_dir / "checkpoints" / stage).glob("*.ckpt"))
        candidates += sorted(files, key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt"), reverse=True)
    return candidates


def find_resume_checkpoint(cfg: DictConfig, run_dir: Path) -> ResumePoint | None:
    """The checkpoint to resume from (``ckpt_path=PATH`` or ``resume=true``), None for a fresh run.

    ``resume=true`` takes the newest checkpoint that reads back intact; a truncated one (a kill
    mid-write on a file system without atomic renames, a full disk) is skipped with a warning. An
    *unsafe* one is never skipped: its error stops the run.
    """
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        checkpoint = read_checkpoint(path)
    elif cfg.get("resume"):
        for path in resume_candidates(run_dir):
            try:
                checkpoint = read_checkpoint(path)
                break
            except CorruptCheckpointError as error:
                log.warning("resume=true: skipping %s, it is unreadable (%s)", path, error)
        else:
            raise FileNotFoundError(
                f"resume=true found no readable checkpoint under {run_dir / 'checkpoints'}; pass hydra.run.dir=<the run "
                "to resume> or ckpt_path=PATH"
            )
    else:
        return None
    stage = checkpoint_stage(checkpoint)
    if stage not in ("autoencoder", "diffusion"):
        raise CorruptCheckpointError(f"ckpt_path={str(path)!r} is not a tinyldm training checkpoint (no stage stamp)")
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise CorruptCheckpointError(f"{str(path)!r} cannot be resumed from: it lacks {missing}; only full "
                                     "training checkpoints (checkpoints/<stage>/last.ckpt) can be resumed")
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
