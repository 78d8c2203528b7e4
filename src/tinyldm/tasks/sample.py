"""``python sample.py``: draw labelled samples from a stage-2 checkpoint into an ``.npz`` + PNG grid.

The ``.npz`` holds ``images`` (uint8, (N, 28, 28), padding cropped), ``labels`` (int64 (N,), the
class each image was asked for, -1 for an unconditional model) and ``metadata`` (JSON: sampler
settings, seed, checkpoint path) so an evaluation can always be traced back to its settings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from tinyldm.diffusion import DiffusionSampler
from tinyldm.lit.diffusion_module import LatentDiffusionModule
from tinyldm.utils.checkpoints import require_stage, restore_module
from tinyldm.tasks.validation import check_sample_config
from tinyldm.utils.files import atomic_write
from tinyldm.utils.images import grid_uint8, save_png, to_uint8
from tinyldm.utils.instantiate import build

log = logging.getLogger(__name__)


def check_output_path(out: str | Path, overwrite: bool) -> tuple[Path, Path]:
    """The ``.npz`` and its ``.png`` grid: one output, refused (before any work) if either exists."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"out={str(out)!r} must end in .npz")
    if not out.parent.resolve().is_dir():
        raise FileNotFoundError(f"out={str(out)!r}: folder {str(out.parent)!r} does not exist; create it first")
    grid = out.with_suffix(".png")
    existing = [str(p) for p in (out, grid) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"out={str(out)!r}: {existing} already exist(s); pass overwrite=true to replace the npz and "
                              "its grid, or choose another path")
    return out, grid


def publish_samples(out: Path, grid_path: Path, arrays: dict[str, Any], grid: np.ndarray, overwrite: bool) -> None:
    """Write the npz and its grid together, atomically, under a lock on ``out``.

    Two runs to one ``out=`` both checked at start-up that it was free; the lock and a second
    check at write time make the later one fail instead of silently replacing the other's result.
    """
    with FileLock(str(out.with_name(f".{out.name}.lock"))):
        existing = [str(p) for p in (out, grid_path) if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"out={str(out)!r}: {existing} appeared while this run was sampling (another run wrote "
                                  "them); nothing was written. Pass overwrite=true or choose another path")
        save_png(grid, grid_path)
        with atomic_write(out) as handle:
            np.savez(handle, **arrays)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r} is not one of ['auto', 'cpu', 'cuda']")
    return torch.device(name)


def load_diffusion_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> LatentDiffusionModule:
    """Load a stage-2 checkpoint (refusing stage-1 or foreign files with a clear error)."""
    model = restore_module(LatentDiffusionModule, require_stage(path, "diffusion"), path)
    return model.to(device).eval()


def requested_labels(model: LatentDiffusionModule, n_per_class: int, classes: Any, n: int | None) -> torch.Tensor:
    """(N,) labels to sample: each requested class ``n_per_class`` times, or -1s for unconditional models."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class={n_per_class} must be >= 1")
    if not model.is_conditional:
        if classes:
            raise ValueError(f"classes={list(classes)} given, but this checkpoint is unconditional")
        count = int(n) if n is not None else 10 * n_per_class
        if count < 1:
            raise ValueError(f"n={n} must be >= 1")
        return torch.full((count,), -1, dtype=torch.long)
    allowed = list(range(model.num_classes))
    chosen = allowed if classes is None else [int(c) for c in classes]
    bad = [c for c in chosen if c not in allowed]
    if bad or not chosen:
        raise ValueError(f"classes={chosen}: {bad or 'empty'} not among the model's classes {allowed}")
    return torch.tensor(chosen, dtype=torch.long).repeat_interleave(n_per_class)


@torch.no_grad()
def generate(model: LatentDiffusionModule, labels: torch.Tensor, sampler: DiffusionSampler, seed: int,
             batch_size: int = 250, progress: bool = False) -> torch.Tensor:
    """Images (N, 1, H, W) in [-1, 1]; one CPU generator for all batches, so a seed fixes the output."""
    sampler.build_scheduler(model.noise_scheduler.config)  # refuses steps > T before any work
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    chunks = []
    for batch in labels.split(batch_size):
        if model.is_conditional:
            chunks.append(model.sample(batch, generator=generator, sampler=sampler, progress=progress).cpu())
        else:
            chunks.append(model.sample(None, num_samples=len(batch), generator=generator, sampler=sampler, progress=progress).cpu())
    return torch.cat(chunks)


def run(cfg: DictConfig) -> dict[str, Any]:
    check_sample_config(cfg)
    out, grid_path = check_output_path(cfg.out, bool(cfg.overwrite))
    sampler: DiffusionSampler = build(cfg.sampler)
    device = resolve_device(cfg.device)
    model = load_diffusion_checkpoint(cfg.ckpt, device)
    labels = requested_labels(model, int(cfg.n_per_class), cfg.classes, cfg.n)
    log.info("Sampling %d images with %r from %s", len(labels), sampler, cfg.ckpt)
    images = generate(model, labels, sampler, int(cfg.seed), int(cfg.batch_size), bool(cfg.progress))
    pixels = to_uint8(images, pad=model.hparams.image_pad)  # (N, 28, 28) uint8
    metadata = {
        "ckpt": str(Path(cfg.ckpt).resolve()),
        "sampler": OmegaConf.to_container(cfg.sampler, resolve=True),
        "seed": int(cfg.seed),
        "n_per_class": int(cfg.n_per_class),
        "classes": sorted({int(c) for c in labels.tolist()}),
    }
    per_row = int(cfg.grid_per_class)
    grid = grid_uint8(_grid_selection(images, labels, per_row), nrow=per_row, pad=model.hparams.image_pad)
    arrays = {"images": pixels, "labels": labels.numpy().astype(np.int64), "metadata": np.array(json.dumps(metadata))}
    publish_samples(out, grid_path, arrays, grid, bool(cfg.overwrite))
    log.info("Wrote %s (%d images) and %s", out, len(pixels), grid_path)
    return {"out": str(out), "grid": str(grid_path), "num_images": len(pixels), **metadata}


def _grid_selection(images: torch.Tensor, labels: torch.Tensor, per_row: int) -> torch.Tensor:
    """First ``per_row`` images of each requested class, one class per row."""
    return torch.cat([images[labels == c][:per_row] for c in torch.unique(labels)])
