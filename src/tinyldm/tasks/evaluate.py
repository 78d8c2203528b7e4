"""``python evaluate.py``: score a samples file or a stage-2 checkpoint; write ``metrics.json``.

Each run (or sweep point) writes ``metrics.json`` with the ``eval/*`` keys of the one evaluation
(:func:`tinyldm.evaluation.evaluate.evaluate`, the end of training's too), the sampler and guidance
settings among them, so the sweep summary callback can collect a multirun into one CSV and plot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tinyldm.config_checks import check_evaluate_config
from tinyldm.evaluation.evaluate import evaluate
from tinyldm.evaluation.metrics import validate_samples
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.samples_file import read_samples
from tinyldm.utils.devices import resolve_device
from tinyldm.utils.distributed import is_global_zero
from tinyldm.utils.files import write_json
from tinyldm.utils.hydra_job import given_keys, run_dir_of
from tinyldm.utils.instantiate import build
from tinyldm.utils.loggers import RunLoggers

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    check_evaluate_config(cfg)
    run_dir = run_dir_of(cfg)
    if is_global_zero() and (run_dir / "metrics.json").exists():
        raise FileExistsError(
            f"{str(run_dir / 'metrics.json')!r} already exists: evaluate into a new directory "
            "(leave hydra.run.dir unset) so no earlier result is replaced"
        )
    datamodule = build(cfg.dataset)
    samples, pipeline, solver, guidance = None, None, None, None
    if cfg.samples:  # checked here, before the classifier trains
        images, labels, metadata = read_samples(cfg.samples)
        images, labels = validate_samples(images, labels, datamodule.num_classes, what=f"samples={cfg.samples!r}")
        samples = (images, labels, metadata)
        ckpt = metadata.get("ckpt")  # its model, when that file is still there: the reconstruction ceiling
        if ckpt and Path(str(ckpt)).exists():
            pipeline = LatentDiffusionPipeline.load(ckpt, resolve_device(cfg.device))
        else:
            log.info("No reconstruction ceiling: the samples file names no readable checkpoint (ckpt=%r)", ckpt)
    else:
        pipeline = LatentDiffusionPipeline.load(cfg.ckpt, resolve_device(cfg.device))
        # the run's own solver and guidance, unless sampler=... / guidance=... say otherwise
        solver, guidance = pipeline.sampling_for(given_keys(cfg.sampler), given_keys(cfg.guidance))
    result = evaluate(
        datamodule,
        cfg.evaluation,
        cfg.paths.cache_dir,
        int(cfg.seed),
        misread_png=run_dir / "misread.png" if is_global_zero() else None,
        pipeline=pipeline,
        samples=samples,
        solver=solver,
        guidance=guidance,
        title=f"evaluation of {cfg.samples or cfg.ckpt} on {cfg.dataset.name}",
    )
    metrics = {
        **result,
        "samples": cfg.samples,
        "ckpt": cfg.ckpt,
        "dataset": cfg.dataset.name,
        "dataset_source": datamodule.source_used,
    }
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
                **{k: metrics.get(f"eval/{k}") for k in ("guidance_scale", "sampler_steps")},
            }
        )
        logger.log_metrics(scalars)
    loggers.finish()
