"""Checkpoint loading with clear errors: wrong path, not a checkpoint, or the wrong stage.

Every checkpoint tinyldm writes carries ``checkpoint["tinyldm"] = {"stage": ..., "version": ...}``
(added in the modules' ``on_save_checkpoint``) so a stage-2 file passed where a stage-1 file is
expected is refused with a message instead of failing deep inside ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import WandbLogger

STAGES = ("autoencoder", "diffusion")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict on CPU; raise FileNotFoundError / ValueError with the path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"checkpoint {str(path)!r} is a directory, expected a .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # pickle / zip errors come in many types
        raise ValueError(f"{str(path)!r} is not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{str(path)!r} is not a Lightning checkpoint (no 'state_dict' entry)")
    return checkpoint


def checkpoint_stage(checkpoint: dict[str, Any]) -> str | None:
    return (checkpoint.get("tinyldm") or {}).get("stage")


def require_stage(path: str | Path, expected: str) -> dict[str, Any]:
    """Read ``path`` and check it was written by stage ``expected`` (``autoencoder``/``diffusion``)."""
    if expected not in STAGES:
        raise ValueError(f"expected stage {expected!r} is not one of {list(STAGES)}")
    checkpoint = read_checkpoint(path)
    stage = checkpoint_stage(checkpoint)
    if stage != expected:
        found = f"a {stage} (stage {STAGES.index(stage) + 1})" if stage in STAGES else "not a tinyldm"
        raise ValueError(
            f"{str(path)!r} is {found} checkpoint, but a {expected} (stage {STAGES.index(expected) + 1}) "
            "checkpoint is required here"
        )
    return checkpoint


def stamp(checkpoint: dict[str, Any], stage: str, loggers: Sequence[Any] = ()) -> None:
    """Mark a checkpoint dict as written by ``stage`` (called from ``on_save_checkpoint``).

    The W&B run id is stored too, so that resuming from this checkpoint continues the same W&B
    run instead of starting a new one.
    """
    from tinyldm import __version__

    checkpoint["tinyldm"] = {"stage": stage, "version": __version__}
    wandb_ids = [logger.version for logger in loggers if isinstance(logger, WandbLogger) and logger.version]
    if wandb_ids:
        checkpoint["tinyldm"]["wandb_run_id"] = str(wandb_ids[0])


def wandb_run_id(checkpoint: dict[str, Any]) -> str | None:
    """The W&B run a checkpoint was logged to (None when it was written without W&B)."""
    return (checkpoint.get("tinyldm") or {}).get("wandb_run_id")
