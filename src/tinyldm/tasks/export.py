"""``python export.py``: a stage-2 checkpoint as a model folder (:mod:`tinyldm.model_folder`) with its model card.

The card (:mod:`tinyldm.model_card`) takes the training command and measured figures from the run directory
the checkpoint sits in (``RUN/checkpoints/diffusion.ckpt``), or from ``metrics=`` — only when that record
names this checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tinyldm import __version__
from tinyldm.model_card import find_run, model_card
from tinyldm.pipeline import LatentDiffusionPipeline

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    ckpt, out = Path(str(cfg.ckpt)), Path(str(cfg.out))
    if ckpt.is_dir():
        raise ValueError(
            f"ckpt={str(ckpt)!r} is a folder: export.py reads a stage-2 .ckpt (a model folder is already one)"
        )
    if out.exists():
        raise FileExistsError(f"out={str(out)!r} already exists: a model folder is never written over; choose another")
    if not out.resolve().parent.is_dir():
        raise FileNotFoundError(f"out={str(out)!r}: folder {str(out.parent)!r} does not exist; create it first")
    run_record = find_run(ckpt, cfg.get("metrics"))  # refuses a metrics= file about another checkpoint
    pipeline = LatentDiffusionPipeline.from_checkpoint(ckpt)
    card = model_card(pipeline.model, run_record, __version__)
    files = {"training_config.yaml": run_record.resolved_config} if run_record and run_record.resolved_config else {}
    pipeline.save_pretrained(out, card=card, files=files)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log.info(
        "Wrote model folder %s (%.1f MB)%s",
        out,
        size / 1e6,
        "" if run_record else "; no run record: the card has no figures",
    )
    return {"out": str(out), "bytes": size, "measured": run_record is not None}
