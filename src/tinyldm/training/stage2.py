"""Stage 2: train the latent diffusion model on the frozen stage-1 autoencoder."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from tinyldm.autoencoders.base import Autoencoder
from tinyldm.config_checks import unet_config_for
from tinyldm.data.latents import LatentDataModule
from tinyldm.diffusion.dpm_solver_sde import noise_interval_record
from tinyldm.diffusion.timestep_grid import grid_record
from tinyldm.evaluation.misreads import save_misread_grid
from tinyldm.evaluation.score import format_table, prefixed, score
from tinyldm.evaluation.text import prompt_grid, text_metrics
from tinyldm.lit.autoencoder_module import AutoencoderModule
from tinyldm.lit.diffusion_module import STAGE, LatentDiffusionModule
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.training.resume import ResumePoint, refuse_a_model_that_does_not_fit
from tinyldm.training.trainer import (
    StageResult,
    build_trainer,
    log_batch_sizes,
    save_stage_checkpoint,
    stage_length,
    stage_metrics,
)
from tinyldm.utils.images import save_png
from tinyldm.utils.loggers import RunLoggers, log_image_grid

log = logging.getLogger(__name__)


def module_from_config(
    cfg: DictConfig,
    latent_shape: Sequence[int],
    autoencoder: Mapping[str, Any] | None = None,
    image_pad: int = 2,
    image_dir: str | None = None,
    trained_autoencoder: Autoencoder | None = None,
) -> LatentDiffusionModule:
    """The stage-2 module ``cfg`` describes on ``latent_shape`` (untrained UNet).

    Its stage 1 is ``trained_autoencoder`` (described by the ``autoencoder`` config) when given, else a
    new model built from ``autoencoder`` or ``cfg.model.net``.
    """

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True)

    diffusion = cfg.diffusion
    return LatentDiffusionModule(
        autoencoder=dict(autoencoder) if autoencoder is not None else plain(cfg.model.net),
        unet=plain(OmegaConf.create(unet_config_for(cfg.unet, latent_shape))),
        conditioner=plain(cfg.conditioner),
        scheduler=plain(cfg.scheduler),
        sampler=plain(cfg.sampler),
        optimizer=plain(diffusion.optimizer),
        lr_scheduler=plain(diffusion.lr_scheduler) if diffusion.get("lr_scheduler") else None,
        latent_shape=list(latent_shape),
        ema_decay=float(diffusion.ema_decay),
        ema_power=diffusion.get("ema_power"),
        guide_at=diffusion.get("guide_at"),
        min_snr_gamma=diffusion.get("min_snr_gamma"),
        timestep_sampling=plain(diffusion.timestep_sampling) if diffusion.get("timestep_sampling") else None,
        noise_assignment=str(diffusion.get("noise_assignment", "independent")),
        input_perturbation=diffusion.get("input_perturbation", 0.0),
        channels_last=bool(diffusion.get("channels_last", False)),
        compile_unet=bool(diffusion.get("compile_unet", False)),
        image_pad=image_pad,
        grid=plain(diffusion.grid),
        seed=int(cfg.seed),
        image_dir=image_dir,
        trained_autoencoder=trained_autoencoder,
    )


def train_diffusion(
    cfg: DictConfig,
    run_dir: Path,
    datamodule: L.LightningDataModule,
    stage1: AutoencoderModule,
    autoencoder_ckpt: Path,
    loggers: RunLoggers,
    resume: ResumePoint | None = None,
) -> StageResult:
    """Fit stage 2 on ``stage1`` (resuming from ``resume`` when given), save ``diffusion.ckpt``, then evaluate.

    The stage-1 model arrives in memory, as the run trained or read it; ``diffusion.ckpt`` still carries a copy
    of its weights and config, so it samples without the stage-1 file.
    """
    # Stage 2 starts from the seed's random state whatever stage 1 did (trained now, reused from the cache,
    # read from a file), so one config trains the same stage 2 on a first run and on a re-run.
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    latent_shape = stage1.autoencoder.latent_shape(datamodule.image_shape)
    module = module_from_config(
        cfg,
        latent_shape,
        dict(stage1.hparams.autoencoder),
        datamodule.pad,
        str(run_dir / "images"),
        trained_autoencoder=stage1.autoencoder,
    )
    if resume is not None:
        refuse_a_model_that_does_not_fit(module, resume)  # before the latents are encoded, naming what differs
    log.info(
        "Stage 2 on latents %s with scale factor %.4f from %s",
        latent_shape,
        float(module.autoencoder.scale_factor),
        autoencoder_ckpt,
    )
    latents = LatentDataModule(
        datamodule,
        module.autoencoder,
        batch_size=int(cfg.diffusion.batch_size),
        seed=int(cfg.seed),
        conditioner=module.denoiser.conditioner,
    )
    trainer = build_trainer(cfg, STAGE, run_dir, loggers, **stage_length(cfg.diffusion))
    log_batch_sizes(trainer, "ldm", int(cfg.diffusion.batch_size), sum(p.numel() for p in module.denoiser.parameters()))
    start = time.perf_counter()
    trainer.fit(module, datamodule=latents, ckpt_path=str(resume.path) if resume else None)
    fit_seconds = time.perf_counter() - start

    checkpoint = run_dir / "checkpoints" / "diffusion.ckpt"
    save_stage_checkpoint(trainer, checkpoint)
    metrics = stage_metrics(trainer, "ldm/val/")
    seen = trainer.global_step * int(cfg.diffusion.batch_size) * trainer.world_size
    metrics.update(
        {
            "ldm/wall_seconds": fit_seconds,
            "ldm/train_images_per_second": seen / fit_seconds if fit_seconds else 0.0,
            "ldm/epochs": trainer.current_epoch,
            "ldm/steps": trainer.global_step,
            "ldm/num_parameters": sum(p.numel() for p in module.denoiser.parameters()),
        }
    )
    if trainer.is_global_zero:
        start = time.perf_counter()
        scale = float(module.sampler.guidance_scale)
        grid = module.sample_grid(int(cfg.diffusion.grid.samples_per_class), scale, seed=int(cfg.seed))
        path = save_png(grid, run_dir / "samples.png")
        metrics["ldm/final_grid_seconds"] = time.perf_counter() - start
        log.info("Final sample grid (rows = classes, guidance %g): %s", scale, path)
        strip = log_image_grid(
            trainer,
            "ldm/samples/trajectory",
            module.trajectory_strip(seed=int(cfg.seed)),
            run_dir / "images",
            "predicted x0 at t = 999, 750, 500, 250, 100, 0 and the final sample",
        )
        log.info("Denoising trajectory strip: %s", strip)
        pipeline = LatentDiffusionPipeline(module)
        if pipeline.takes_prompts:
            prompts = log_image_grid(
                trainer,
                "ldm/samples/prompts",
                prompt_grid(pipeline, seed=int(cfg.seed)),  # every attribute the run's prompts can say
                run_dir / "images",
                "rows: classes; columns: the prompt's attribute word (same noise along a row)",
            )
            log.info("Prompt grid (rows = classes, columns = attribute words): %s", prompts)
        if cfg.evaluation.enabled:
            metrics.update(evaluate_model(module, datamodule, cfg, run_dir / "images"))
            for logger in trainer.loggers:
                logger.log_metrics(
                    {k: v for k, v in metrics.items() if k.startswith("eval/") and isinstance(v, float)},
                    step=trainer.global_step,
                )
    return StageResult(checkpoint, metrics)


def evaluate_model(
    module: LatentDiffusionModule, datamodule: L.LightningDataModule, cfg: DictConfig, image_dir: Path
) -> dict:
    """Sample ``evaluation.n_per_class`` images per class with the EMA model and score them.

    The samples read as another class than asked go to ``image_dir/eval_misread.png``.
    """
    evaluation = cfg.evaluation
    pipeline = LatentDiffusionPipeline(module)
    start = time.perf_counter()
    labels = pipeline.labels(int(evaluation.n_per_class))
    images = pipeline.generate(labels, seed=int(evaluation.seed), batch_size=int(evaluation.batch_size))
    sample_seconds = time.perf_counter() - start
    images_uint8 = pipeline.to_uint8(images)  # (N, 28, 28)
    result = score(
        images_uint8,
        labels.numpy(),
        datamodule,
        cfg.paths.cache_dir,
        evaluation.classifier_epochs,
        int(evaluation.seed),
        autoencoder=module.autoencoder,
        classifier_members=int(evaluation.classifier_members),
    )
    log.info("\n%s", format_table(result, f"evaluation of the final EMA model ({module.sampler})"))
    misread_png = save_misread_grid(
        images_uint8, result["misread"], result["classifier_members"], image_dir / "eval_misread.png"
    )
    if misread_png is not None:
        log.info("Samples read as another class than asked: %s", misread_png)
    if pipeline.takes_prompts:
        result.update(text_metrics(pipeline, datamodule, cfg, evaluation))
    result.update(
        {
            "sample_images_per_second": len(labels) / sample_seconds,
            "guidance_scale": module.sampler.guidance_scale,
            "autoguidance_scale": module.sampler.autoguidance_scale,
            **module.sampler.guidance_method_settings(),
            "sampler_steps": module.sampler.steps,
            "sampler_kind": module.sampler.kind,
            **grid_record(dataclasses.asdict(module.sampler)),
            **noise_interval_record(dataclasses.asdict(module.sampler)),
        }
    )
    return prefixed(result)
