"""Stage 2: train the latent diffusion model on the frozen stage-1 autoencoder."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from tinyldm.autoencoders.base import Autoencoder
from tinyldm.callbacks.sample_grids import SampleGrids
from tinyldm.data.latents import LatentDataModule
from tinyldm.evaluation.evaluate import evaluate
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
from tinyldm.unet import unet_config_for
from tinyldm.utils.loggers import RunLoggers

log = logging.getLogger(__name__)


#: keys of ``conf/diffusion`` that set stage 2's run (its loop and its grids); every other key is a
#: LatentDiffusionModule argument
RUN_KEYS = ("max_steps", "max_epochs", "val_every_n_steps", "batch_size", "grid")


def module_from_config(
    cfg: DictConfig,
    latent_shape: Sequence[int],
    autoencoder: Mapping[str, Any] | None = None,
    image_pad: int = 2,
    trained_autoencoder: Autoencoder | None = None,
) -> LatentDiffusionModule:
    """The stage-2 module ``cfg`` describes on ``latent_shape`` (untrained UNet).

    ``conf/diffusion`` is the module's constructor call, apart from its :data:`RUN_KEYS`: a key the module
    does not take is an error naming it. Its parts come from their own groups (``unet``, ``conditioner``,
    ``scheduler``, ``sampler``, ``guidance``), each a ``_target_`` config. Its stage 1 is
    ``trained_autoencoder`` (described by the ``autoencoder`` config) when given, else a new model built
    from ``autoencoder`` or ``cfg.model.net``.
    """

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=False)

    own = {key: value for key, value in plain(cfg.diffusion).items() if key not in RUN_KEYS}
    try:
        return LatentDiffusionModule(
            autoencoder=dict(autoencoder) if autoencoder is not None else plain(cfg.model.net),
            unet=unet_config_for(plain(cfg.unet), latent_shape),
            conditioner=plain(cfg.conditioner),
            scheduler=plain(cfg.scheduler),
            sampler=plain(cfg.sampler),
            guidance=plain(cfg.guidance),
            latent_shape=list(latent_shape),
            image_pad=image_pad,
            seed=int(cfg.seed),
            trained_autoencoder=trained_autoencoder,
            **own,
        )
    except TypeError as error:  # a diffusion.* key the module does not take
        raise ValueError(f"diffusion: {error}; see conf/diffusion/default.yaml for the keys it takes") from None


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
    grids = SampleGrids(run_dir, **OmegaConf.to_container(cfg.diffusion.grid, resolve=True), seed=int(cfg.seed))
    trainer = build_trainer(cfg, STAGE, run_dir, loggers, extra_callbacks=[grids], **stage_length(cfg.diffusion))
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
    if trainer.is_global_zero and cfg.evaluation.enabled:
        evaluation = cfg.evaluation
        title = f"evaluation of the final EMA model ({module.solver}, {module.guidance})"
        misread_png = run_dir / "images" / "eval_misread.png"
        pipeline = LatentDiffusionPipeline(module)
        cache = cfg.paths.cache_dir
        metrics.update(
            evaluate(datamodule, evaluation, cache, int(evaluation.seed), misread_png, pipeline, title=title)
        )
        for logger in trainer.loggers:
            logger.log_metrics(
                {k: v for k, v in metrics.items() if k.startswith("eval/") and isinstance(v, float)},
                step=trainer.global_step,
            )
    return StageResult(checkpoint, metrics)
