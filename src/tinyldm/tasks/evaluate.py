"""``python evaluate.py``: score a samples file or a stage-2 checkpoint; write ``metrics.json``.

Each run (or sweep point) writes ``metrics.json`` with ``eval/*`` keys plus the sampler settings,
so the sweep summary callback can collect a multirun into one CSV and plot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from tinyldm.config_checks import check_evaluate_config
from tinyldm.diffusion.dpm_solver_sde import noise_interval_record
from tinyldm.diffusion.sampling import guidance_method_record
from tinyldm.diffusion.timestep_grid import grid_record
from tinyldm.evaluation.metrics import validate_samples
from tinyldm.evaluation.misreads import save_misread_grid
from tinyldm.evaluation.score import format_table, prefixed, score
from tinyldm.evaluation.text import text_metrics
from tinyldm.pipeline import LatentDiffusionPipeline, resolve_device
from tinyldm.samples_file import read_samples
from tinyldm.utils.distributed import is_global_zero
from tinyldm.utils.files import write_json
from tinyldm.utils.hydra_job import given_keys, run_dir_of
from tinyldm.utils.instantiate import build
from tinyldm.utils.loggers import RunLoggers

log = logging.getLogger(__name__)


def samples_for(cfg: DictConfig, datamodule: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any], Any]:
    """The images and labels to score, their settings and the model's pipeline (None if unknown).

    A samples file is checked here, before the classifier trains; its autoencoder comes from the
    checkpoint its metadata names, when that file is still there.
    """
    if cfg.samples:
        images, labels, metadata = read_samples(cfg.samples)
        images, labels = validate_samples(images, labels, datamodule.num_classes, what=f"samples={cfg.samples!r}")
        ckpt = metadata.get("ckpt")
        if ckpt and Path(str(ckpt)).is_file():
            return (
                images,
                labels,
                metadata,
                LatentDiffusionPipeline.from_checkpoint(ckpt, resolve_device(cfg.device)),
            )
        log.info("No reconstruction ceiling: the samples file names no readable checkpoint (metadata ckpt=%r)", ckpt)
        return images, labels, metadata, None
    pipeline = LatentDiffusionPipeline.from_checkpoint(cfg.ckpt, resolve_device(cfg.device))
    sampler = pipeline.sampler_for(given_keys(cfg.sampler))  # the run's own, unless sampler=... says otherwise
    labels = pipeline.labels(int(cfg.evaluation.n_per_class))
    images = pipeline.generate(labels, sampler, int(cfg.seed), int(cfg.evaluation.batch_size))
    settings = {"ckpt": str(cfg.ckpt), "sampler": sampler.as_config()}
    return pipeline.to_uint8(images), labels.numpy(), settings, pipeline


def run(cfg: DictConfig) -> dict[str, Any]:
    check_evaluate_config(cfg)
    run_dir = run_dir_of(cfg)
    if is_global_zero() and (run_dir / "metrics.json").exists():
        raise FileExistsError(
            f"{str(run_dir / 'metrics.json')!r} already exists: evaluate into a new directory "
            "(leave hydra.run.dir unset) so no earlier result is replaced"
        )
    datamodule = build(cfg.dataset)
    images, labels, settings, pipeline = samples_for(cfg, datamodule)
    result = score(
        images,
        labels,
        datamodule,
        cfg.paths.cache_dir,
        cfg.evaluation.classifier_epochs,
        int(cfg.seed),
        autoencoder=pipeline.autoencoder if pipeline is not None else None,
        classifier_members=int(cfg.evaluation.classifier_members),
    )
    print(format_table(result, f"evaluation of {cfg.samples or cfg.ckpt} on {cfg.dataset.name}"))
    if is_global_zero():
        members = result["classifier_members"]
        misread_png = save_misread_grid(images, result["misread"], members, run_dir / "misread.png")
        if misread_png is not None:
            log.info("Samples read as another class than asked: %s", misread_png)
    if cfg.ckpt and pipeline.takes_prompts:
        sampler = pipeline.sampler_for(given_keys(cfg.sampler))
        result.update(text_metrics(pipeline, datamodule, cfg, cfg.evaluation, sampler))  # logs its table
    metrics = {
        **prefixed(result),
        "samples": cfg.samples,
        "ckpt": cfg.ckpt,
        "dataset": cfg.dataset.name,
        "dataset_source": datamodule.source_used,
    }
    sampler = settings.get("sampler") or {}
    metrics.update(
        {
            "guidance_scale": sampler.get("guidance_scale"),
            "autoguidance_scale": sampler.get("autoguidance_scale", 1.0 if sampler else None),  # older files: off
            **guidance_method_record(sampler),
            "sampler_steps": sampler.get("steps"),
            "sampler_kind": sampler.get("kind"),
            **grid_record(sampler),
            **noise_interval_record(sampler),
        }
    )
    if is_global_zero():
        metrics = write_json(run_dir / "metrics.json", metrics, replace=False)
        log.info("Wrote %s", run_dir / "metrics.json")
        _log_to_loggers(cfg, metrics)
    return metrics


def _log_to_loggers(cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """Send the scalar figures to the configured loggers (W&B: one run per sweep point)."""
    loggers = RunLoggers(cfg.get("logger"))
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for logger in loggers.for_stage("evaluate"):
        logger.log_hyperparams(
            {
                "samples": cfg.samples,
                "ckpt": cfg.ckpt,
                **{k: metrics.get(k) for k in ("guidance_scale", "sampler_steps")},
            }
        )
        logger.log_metrics(scalars)
    loggers.finish()
