"""``python sample.py``: draw labelled samples from a stage-2 checkpoint into an ``.npz`` + PNG grid.

The file format is :mod:`tinyldm.samples_file`; generation is :class:`tinyldm.pipeline.LatentDiffusionPipeline`,
the same path ``evaluate.py`` and the end of training use, so one seed gives the same images in all three.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from tinyldm.config_checks import check_sample_config
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.samples_file import check_output_path, write_samples
from tinyldm.utils.devices import resolve_device
from tinyldm.utils.hydra_job import given_keys
from tinyldm.utils.images import captioned_grid, grid_uint8

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    check_sample_config(cfg)
    out, grid_path = check_output_path(cfg.out, bool(cfg.overwrite))
    asked = read_prompts(cfg.get("prompt"), cfg.get("prompts"))
    pipeline = LatentDiffusionPipeline.load(cfg.ckpt, resolve_device(cfg.device))
    # the run's own solver and guidance, unless sampler=... / guidance=... say otherwise
    solver, guidance = pipeline.sampling_for(given_keys(cfg.sampler), given_keys(cfg.guidance))
    per_row = int(cfg.grid_per_class)
    pad = pipeline.model.hparams.image_pad
    if asked:
        per_prompt = int(cfg.n) if cfg.n is not None else int(cfg.n_per_class)
        prompts = [prompt for prompt in asked for _ in range(per_prompt)]
        labels = pipeline.prompt_labels(prompts)  # (N,) the class each prompt names, -1 if none; refuses bad prompts
        requests: torch.Tensor | list[str] = prompts
    else:
        labels = pipeline.labels(int(cfg.n_per_class), cfg.classes, cfg.n)
        requests = labels
    log.info("Sampling %d images with %r and %r from %s", len(labels), solver, guidance, cfg.ckpt)
    negative = cfg.get("negative_prompt") if cfg.get("negative_prompt") is not None else cfg.get("negative_class")
    images = pipeline.generate(
        requests,
        negative=negative,
        solver=solver,
        guidance=guidance,
        seed=int(cfg.seed),
        batch_size=int(cfg.batch_size),
        progress=bool(cfg.progress),
    )  # (N, 1, H, W)
    metadata = {
        "ckpt": str(Path(cfg.ckpt).resolve()),
        "sampler": solver.as_config(),
        "guidance": guidance.as_config(),
        "negative": negative,
        "seed": int(cfg.seed),
        "n_per_class": int(cfg.n_per_class),
        "classes": sorted({int(c) for c in labels.tolist() if c >= 0}),
    }
    if asked:
        metadata["prompts_asked"] = asked
        rows = [images[i * per_prompt : i * per_prompt + per_row] for i in range(len(asked))]
        grid = captioned_grid(grid_uint8(torch.cat(rows), nrow=min(per_row, per_prompt), pad=pad), asked)
    else:
        grid = grid_uint8(_grid_selection(images, labels, per_row), nrow=per_row, pad=pad)
    pixels = pipeline.to_uint8(images)  # (N, 28, 28) uint8
    write_samples(
        out, grid_path, pixels, labels.numpy(), metadata, grid, bool(cfg.overwrite), prompts=prompts if asked else None
    )
    log.info("Wrote %s (%d images) and %s", out, len(pixels), grid_path)
    return {"out": str(out), "grid": str(grid_path), "num_images": len(pixels), **metadata}


def read_prompts(prompt: str | None, path: str | None) -> list[str]:
    """The prompts asked for: ``prompt=`` alone, or the non-blank lines of the UTF-8 file ``prompts=``."""
    if prompt is not None:
        return [str(prompt)]
    if path is None:
        return []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"prompts={path!r} is not UTF-8 text ({error})") from error
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"prompts={path!r} holds no prompt (one per line; blank lines are skipped)")
    return prompts


def _grid_selection(images: torch.Tensor, labels: torch.Tensor, per_row: int) -> torch.Tensor:
    """First ``per_row`` images of each requested class, one class per row."""
    return torch.cat([images[labels == c][:per_row] for c in torch.unique(labels)])
