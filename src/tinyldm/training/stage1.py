"""Stage 1: train (or reuse) the autoencoder and leave a checkpoint with its scale factor."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from tinyldm.lit.autoencoder_module import STAGE, AutoencoderModule, compute_scale_factor
from tinyldm.training.autoencoder_cache import AutoencoderCache
from tinyldm.training.resume import ResumePoint, refuse_a_model_that_does_not_fit
from tinyldm.training.trainer import (
    StageResult,
    build_trainer,
    log_batch_sizes,
    save_stage_checkpoint,
    stage_length,
    stage_metrics,
)
from tinyldm.utils.checkpoints import CheckpointError, require_stage, restore_module
from tinyldm.utils.distributed import is_global_zero
from tinyldm.utils.loggers import RunLoggers

log = logging.getLogger(__name__)
SCALE_FACTOR_MAX_IMAGES = 10_000  # enough for a stable std estimate, cheap on any dataset


def new_autoencoder_module(cfg: DictConfig, run_dir: Path, pad: int) -> AutoencoderModule:
    """The untrained stage-1 module ``cfg.model`` describes."""
    training = cfg.model.training
    return AutoencoderModule(
        autoencoder=OmegaConf.to_container(cfg.model.net, resolve=True),
        optimizer=OmegaConf.to_container(training.optimizer, resolve=True),
        lr_scheduler=OmegaConf.to_container(training.lr_scheduler, resolve=True)
        if training.get("lr_scheduler")
        else None,
        reconstruction_loss=training.get("reconstruction_loss", "mse"),
        metric_crop=pad,
        image_dir=str(run_dir / "images"),
        channels_last=bool(training.get("channels_last", False)),
    )


def stage1_module(
    cfg: DictConfig,
    run_dir: Path,
    pad: int,
    trains: bool,
    resume_stage: str | None,
    from_file: AutoencoderModule | None,
) -> tuple[AutoencoderModule, Path | None]:
    """The run's one stage-1 module and the checkpoint it was read from (None: built from ``cfg.model``).

    Built once per run, then trained, filled from the cache or taken as read, and handed to stage 2 in
    memory. ``from_file`` is what the start-up checks read from ``autoencoder_ckpt``; a resumed stage 2
    reads the run's own ``autoencoder.ckpt``.
    """
    if trains:
        return new_autoencoder_module(cfg, run_dir, pad), None
    if from_file is not None:
        return from_file, Path(cfg.autoencoder_ckpt)
    own = run_dir / "checkpoints" / "autoencoder.ckpt"
    if resume_stage == "diffusion" and own.exists():  # written by the run being resumed
        return restore_module(AutoencoderModule, require_stage(own, "autoencoder"), own), own
    return new_autoencoder_module(cfg, run_dir, pad), None


def train_autoencoder(
    module: AutoencoderModule,
    cfg: DictConfig,
    run_dir: Path,
    datamodule: L.LightningDataModule,
    loggers: RunLoggers,
    resume: ResumePoint | None = None,
) -> StageResult:
    """Fit ``module`` (resuming from ``resume``), measure its scale factor, save ``autoencoder.ckpt``."""
    if resume is not None:
        refuse_a_model_that_does_not_fit(module, resume)  # before any work, naming what differs
    training = cfg.model.training
    if training.get("batch_size"):
        # small autoencoders on a few thousand images need many small steps more than big batches
        datamodule.batch_size = int(training.batch_size)
    length = stage_length(training)
    trains = module.autoencoder.is_trainable and (length["max_steps"] > 0 or length["max_epochs"] > 0)
    trainer = build_trainer(cfg, STAGE, run_dir, loggers, **(length if trains else {"max_epochs": 1}))
    log_batch_sizes(trainer, "ae", int(datamodule.batch_size), sum(p.numel() for p in module.autoencoder.parameters()))
    start = time.perf_counter()
    if trains:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume.path) if resume else None)
    else:  # e.g. model=identity: nothing to learn, but still measure the reconstruction metrics
        trainer.validate(module, datamodule=datamodule, verbose=False)
    fit_seconds = time.perf_counter() - start
    metrics = stage_metrics(trainer, "ae/val/")

    datamodule.setup("fit")
    images = datamodule.train_dataset.tensors[0][:SCALE_FACTOR_MAX_IMAGES]  # (N, 1, H, W)
    scale = compute_scale_factor(module.autoencoder, images)
    module.autoencoder.scale_factor.fill_(scale)
    log.info("Stage-1 latent scale factor (1 / std of %d training latents): %.4f", len(images), scale)

    checkpoint = run_dir / "checkpoints" / "autoencoder.ckpt"
    save_stage_checkpoint(trainer, checkpoint)
    seen = trainer.global_step * int(datamodule.batch_size) * trainer.world_size
    metrics.update(
        {
            "ae/scale_factor": scale,
            "ae/wall_seconds": fit_seconds,
            "ae/train_images_per_second": seen / fit_seconds if seen else 0.0,
            "ae/epochs": trainer.current_epoch,
            "ae/steps": trainer.global_step,
            "ae/num_parameters": sum(p.numel() for p in module.autoencoder.parameters()),
        }
    )
    return StageResult(checkpoint, metrics)


def autoencoder_for_run(
    module: AutoencoderModule, cfg: DictConfig, run_dir: Path, datamodule: L.LightningDataModule, loggers: RunLoggers
) -> tuple[StageResult, bool]:
    """Train ``module``, or load the cached weights of the same stage-1 config into it; say which.

    The cache entry's lock is held from the look-up to the store, so parallel jobs with one stage-1
    config train it once. Other DDP ranks of this job only look: rank zero holds the lock while they
    train alongside it, and waiting for it would deadlock the process group.
    """
    cache = AutoencoderCache.for_run(cfg, datamodule)
    lock = cache.locked() if is_global_zero() else contextlib.nullcontext()
    with lock:
        hit = cache.lookup() if cfg.get("reuse_autoencoder", True) else None
        if hit is not None:
            try:  # the entry's key covers this exact config, so its weights fit unless the model's code changed
                module.load_state_dict(hit.state_dict)
            except RuntimeError as error:
                raise CheckpointError(
                    f"stage-1 cache entry {str(hit.checkpoint)!r} does not fit the model this code "
                    f"builds ({str(error)[:200]}); pass reuse_autoencoder=false to retrain it"
                ) from None
            log.info(
                "Reusing the cached stage-1 checkpoint %s (trained earlier with this exact stage-1 config, "
                "data and seed); set reuse_autoencoder=false to retrain",
                hit.checkpoint,
            )
            return StageResult(hit.checkpoint, hit.metrics), True
        result = train_autoencoder(module, cfg, run_dir, datamodule, loggers)
        if is_global_zero():
            cache.store(result.checkpoint, result.metrics, stage1_config(cfg))
    return result, False


def store_resumed_in_cache(result: StageResult, cfg: DictConfig, datamodule: L.LightningDataModule) -> None:
    """A stage 1 finished by ``resume=true`` fills its cache entry, unless a complete one exists."""
    if not is_global_zero():
        return
    cache = AutoencoderCache.for_run(cfg, datamodule)
    with cache.locked():
        if cache.lookup() is None:
            cache.store(result.checkpoint, result.metrics, stage1_config(cfg))


def stage1_config(cfg: DictConfig) -> dict[str, Any]:
    """The human-readable part of a cache entry (``config.yaml``)."""
    return {
        **{key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "dataset")},
        "seed": int(cfg.seed),
    }
