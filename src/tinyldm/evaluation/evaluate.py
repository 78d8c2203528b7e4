"""The one evaluation path: sample (or take a samples file), score, report, and record how the samples were drawn.

The end of training and ``evaluate.py`` both call :func:`evaluate`, so they report the same figures under
the same keys (``eval/cond_acc``, ``eval/fid``, ``eval/fid_floor``, ``eval/guidance_scale``, ...) and draw the
same picture of misread samples; a model evaluated by either with one seed gives the same numbers.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyldm.diffusion import ClassifierFreeGuidance, Solver
from tinyldm.diffusion.sampling import sampling_record
from tinyldm.evaluation.misreads import save_misread_grid
from tinyldm.evaluation.score import format_table, prefixed, score
from tinyldm.evaluation.text import text_metrics

if TYPE_CHECKING:  # the evaluation is handed a pipeline; it never builds one
    from tinyldm.pipeline import LatentDiffusionPipeline

log = logging.getLogger(__name__)


def evaluate(
    datamodule: Any,
    evaluation: Any,
    cache_dir: str | Path,
    seed: int,
    misread_png: Path | None,
    pipeline: LatentDiffusionPipeline | None = None,
    samples: tuple[np.ndarray, np.ndarray, dict[str, Any]] | None = None,
    solver: Solver | None = None,
    guidance: ClassifierFreeGuidance | None = None,
    title: str = "evaluation",
) -> dict[str, Any]:
    """Score ``pipeline``'s samples (or the given ``samples``) on ``datamodule``'s held-out split; ``eval/*`` figures.

    Args:
        datamodule: the data the model was trained on (its held-out split is the reference).
        evaluation: the ``evaluation`` config (``n_per_class``, ``batch_size``, ``classifier_epochs``,
            ``classifier_members``, ``text.*``).
        cache_dir: where the evaluation classifiers are cached.
        seed: the sampling seed and the classifiers' split seed.
        misread_png: where the picture of the samples read as another class goes (None: not drawn).
        pipeline: the model: it draws ``evaluation.n_per_class`` samples per class with ``solver`` and
            ``guidance`` (default: its stored ones), and its stage 1 gives the reconstruction ceiling.
        samples: instead of sampling, ``(images uint8 (N, 28, 28), labels (N,), metadata)`` of a samples file;
            its metadata's ``sampler`` / ``guidance`` are recorded (``pipeline``, when given, only for the ceiling).
        title: the printed table's title.
    """
    record: dict[str, Any] = {}
    if samples is None:
        if pipeline is None:
            raise ValueError("evaluate needs a pipeline to sample from, or samples")
        solver, guidance = solver or pipeline.solver, guidance or pipeline.guidance
        start = time.perf_counter()
        labels = pipeline.labels(int(evaluation.n_per_class))
        drawn = pipeline.generate(
            labels, solver=solver, guidance=guidance, seed=seed, batch_size=int(evaluation.batch_size)
        )  # (N, 1, H, W)
        record["sample_images_per_second"] = len(labels) / (time.perf_counter() - start)
        images, labels = pipeline.to_uint8(drawn), labels.numpy()  # (N, 28, 28), (N,)
        record.update(sampling_record(solver.as_config(), guidance.as_config()))
    else:
        images, labels, metadata = samples
        record.update(sampling_record(metadata.get("sampler"), metadata.get("guidance")))
    result = score(
        images,
        labels,
        datamodule,
        cache_dir,
        evaluation.classifier_epochs,
        seed,
        autoencoder=pipeline.autoencoder if pipeline is not None else None,
        classifier_members=int(evaluation.classifier_members),
    )
    log.info("\n%s", format_table(result, title))
    if misread_png is not None:
        picture = save_misread_grid(images, result["misread"], result["classifier_members"], misread_png)
        if picture is not None:
            log.info("Samples read as another class than asked: %s", picture)
    if samples is None and pipeline.takes_prompts:  # prompt metrics need the model, and draw their own samples
        result.update(text_metrics(pipeline, datamodule, evaluation, cache_dir, seed, solver, guidance))
    return prefixed({**result, **record})
