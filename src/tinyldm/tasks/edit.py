"""``python edit.py``: image-to-image, inpainting and interpolation with a stage-2 checkpoint, into an ``.npz`` + PNG.

The edits are :class:`~tinyldm.pipeline.LatentDiffusionPipeline`'s (``img2img``, ``inpaint``, ``interpolate``), the
same path as ``sample.py``; the output is a samples file (:mod:`tinyldm.samples_file`) whose ``labels`` are the
classes asked for, so ``evaluate.py samples=...`` scores an edit like any samples, with the edit's settings in
its metadata and, for image-to-image and inpainting, the ``sources`` beside the results.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from tinyldm.config_checks import check_edit_config
from tinyldm.masks import parse_mask
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.samples_file import check_output_path, read_samples, write_samples
from tinyldm.utils.devices import resolve_device
from tinyldm.utils.hydra_job import given_keys
from tinyldm.utils.images import from_uint8, grid_uint8, to_uint8
from tinyldm.utils.instantiate import build

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    check_edit_config(cfg)  # every value, before the checkpoint is read
    out, grid_path = check_output_path(cfg.out, bool(cfg.overwrite))
    mask = parse_mask(cfg.mask) if cfg.mode == "inpaint" else None
    sources = read_sources(cfg) if cfg.mode != "interpolate" else None
    pipeline = LatentDiffusionPipeline.load(cfg.ckpt, resolve_device(cfg.device))
    # the run's own solver and guidance, unless sampler=... / guidance=... say otherwise
    solver, guidance = pipeline.sampling_for(given_keys(cfg.sampler), given_keys(cfg.guidance))
    negative = cfg.negative_prompt if cfg.negative_prompt is not None else cfg.negative_class
    options = {"negative": negative, "solver": solver, "guidance": guidance, "seed": int(cfg.seed)}
    settings: dict[str, Any] = {"mode": cfg.mode, "negative": negative}
    if cfg.mode == "interpolate":
        start, end = endpoints(cfg)
        images = pipeline.interpolate(
            start, end, int(cfg.n), end_seed=cfg.to_seed, progress=bool(cfg.progress), **options
        )
        labels = torch.full((len(images),), -1, dtype=torch.long)
        asked: list[str] | None = None
        settings.update(start=start, end=end, n=int(cfg.n), to_seed=cfg.to_seed)
        grid = grid_uint8(images, nrow=len(images), pad=pad_of(pipeline))
    else:
        source_images, source_labels, source_prompts = sources
        targets, labels, asked = targets_for(cfg, pipeline, source_labels, source_prompts)
        batch = {"batch_size": int(cfg.batch_size), "progress": bool(cfg.progress)}
        if cfg.mode == "img2img":
            images = pipeline.img2img(source_images, targets, float(cfg.strength), **options, **batch)
            settings["strength"] = float(cfg.strength)
        else:
            steps = int(cfg.resample_steps)
            images = pipeline.inpaint(source_images, mask, targets, resample_steps=steps, **options, **batch)
            settings.update(mask=str(cfg.mask), resample_steps=steps)
        grid = pairs_grid(from_uint8(source_images, pad_of(pipeline)), images, int(cfg.grid_per_row), pad_of(pipeline))
        settings["source"] = str(cfg.source)
    pixels = pipeline.to_uint8(images)  # (N, 28, 28) uint8
    metadata = {
        "ckpt": str(Path(cfg.ckpt).resolve()),
        "sampler": solver.as_config(),
        "guidance": guidance.as_config(),
        "seed": int(cfg.seed),
        "edit": settings,
    }
    extra = {"sources": sources[0]} if sources is not None else None
    write_samples(out, grid_path, pixels, labels.numpy(), metadata, grid, bool(cfg.overwrite), asked, extra)
    log.info("Wrote %s (%d images, %s) and %s", out, len(pixels), cfg.mode, grid_path)
    return {"out": str(out), "grid": str(grid_path), "num_images": len(pixels), **metadata}


def read_sources(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """The images to edit, uint8 ``(N, 28, 28)``, with their labels (-1: unknown) and prompts (or None).

    ``source`` is an ``.npz`` (``images`` and ``labels``, ``prompts`` if a text model drew them), a 28x28 PNG or a
    folder of them (sorted by name; no labels), or ``heldout``: the first ``n`` images of ``dataset``'s held-out
    split, with their labels.
    """
    source = str(cfg.source)
    if source == "heldout":
        datamodule = build(cfg.dataset)
        datamodule.setup("fit")
        images, labels = datamodule.val_dataset.tensors  # (M, 1, S, S) in [-1, 1], (M,)
        count = int(cfg.n)
        return to_uint8(images[:count], datamodule.pad), labels[:count].numpy(), None
    path = Path(source)
    if path.suffix == ".npz":
        images, labels, metadata = read_samples(path)
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape[1:] != (28, 28):
            kind = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise ValueError(f"source={source!r}: images must be uint8 (N, 28, 28), got {kind}")
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"source={source!r}: labels must be ({len(images)},) integers, got {labels.dtype} {labels.shape}"
            )
        prompts = metadata.get("prompts")
        return images, labels, None if prompts is None else [str(p) for p in np.asarray(prompts).tolist()]
    files = sorted(path.glob("*.png")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"source={source!r}: no such .npz or PNG file, nor a folder holding PNGs, nor heldout")
    pictures = []
    for file in files:
        with Image.open(file) as image:
            pixels = np.asarray(image.convert("L"))
        if pixels.shape != (28, 28):
            raise ValueError(f"source {str(file)!r} is {pixels.shape[1]}x{pixels.shape[0]} pixels; it must be 28x28")
        pictures.append(pixels)
    return np.stack(pictures).astype(np.uint8), np.full(len(pictures), -1, dtype=np.int64), None


def targets_for(
    cfg: DictConfig, pipeline: LatentDiffusionPipeline, labels: np.ndarray, prompts: list[str] | None
) -> tuple[torch.Tensor | list[str], torch.Tensor, list[str] | None]:
    """What each source is redrawn as: (the requests, the class each asks for (-1: none), the prompts or None)."""
    n = len(labels)
    if pipeline.takes_prompts:
        if cfg.target_class is not None:
            raise ValueError("target_class= is for class checkpoints; this one reads prompts: use target_prompt=")
        if cfg.target_prompt is not None:
            asked = [str(cfg.target_prompt)] * n
        elif prompts is not None:
            asked = prompts
        else:
            if (labels < 0).any():
                raise ValueError("the sources have no labels or prompts: say what to draw with target_prompt=")
            asked = pipeline.model.denoiser.conditioner.prompts(torch.from_numpy(labels))  # their class names
        return asked, pipeline.prompt_labels(asked), asked
    if cfg.target_prompt is not None:
        raise ValueError("target_prompt= needs a text checkpoint (conditioner=text); this one reads class labels")
    if cfg.target_class is not None:
        wanted = torch.full((n,), int(cfg.target_class), dtype=torch.long)
    else:
        if (labels < 0).any():
            raise ValueError("the sources have no labels: say what to draw with target_class=")
        wanted = torch.from_numpy(labels.astype(np.int64))
    return wanted, wanted, None


def endpoints(cfg: DictConfig) -> tuple[int | str, int | str]:
    """``from_class`` / ``to_class``, or ``from_prompt`` / ``to_prompt`` (checked by ``check_edit_config``)."""
    if cfg.from_prompt is not None:
        return str(cfg.from_prompt), str(cfg.to_prompt)
    return int(cfg.from_class), int(cfg.to_class)


def pad_of(pipeline: LatentDiffusionPipeline) -> int:
    return int(pipeline.model.hparams.image_pad)


def pairs_grid(sources: torch.Tensor, results: torch.Tensor, per_row: int, pad: int) -> np.ndarray:
    """(H', W', 3) uint8: for every ``per_row`` images, a row of sources above a row of their results."""
    rows = []
    for start in range(0, len(results), per_row):
        chunk = slice(start, start + per_row)
        rows += [sources[chunk], results[chunk]]
    width = min(per_row, len(results))
    padded = [torch.cat([r, torch.ones(width - len(r), *r.shape[1:])]) if len(r) < width else r for r in rows]
    return grid_uint8(torch.cat(padded), nrow=width, pad=pad)
