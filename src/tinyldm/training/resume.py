"""Continuing a run: which checkpoint to resume from, and refusing to overwrite a run that exists.

A run directory that already holds a run is only ever continued (``resume=true`` / ``ckpt_path=``),
never overwritten: re-running into it would replace ``autoencoder.ckpt`` under an older
``diffusion.ckpt`` built on the previous autoencoder, and mix two runs' results in one ``metrics.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig

from tinyldm.utils.checkpoints import CorruptCheckpointError, checkpoint_stage, read_checkpoint, wandb_run_id

log = logging.getLogger(__name__)


def refuse_existing_run(run_dir: Path) -> None:
    """A run directory that already holds checkpoints or results is continued, never overwritten.

    Re-running into it would replace ``autoencoder.ckpt`` under an older ``diffusion.ckpt`` built on
    the previous autoencoder, and mix two runs' results in one ``metrics.json``.
    """
    checkpoints = run_dir / "checkpoints"
    held = [
        name
        for name, present in (
            ("checkpoints/", checkpoints.is_dir() and any(checkpoints.iterdir())),
            ("metrics.json", (run_dir / "metrics.json").exists()),
        )
        if present
    ]
    if held:
        raise FileExistsError(
            f"run directory {str(run_dir)!r} already holds a run ({', '.join(held)}); pass resume=true to continue it, "
            "or leave hydra.run.dir unset (every run then gets a new directory)"
        )


# what Lightning needs to continue a fit where it stopped
RESUME_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "epoch", "global_step")


class ResumePoint(NamedTuple):
    path: Path
    stage: str  # the stage that wrote the checkpoint: autoencoder | diffusion
    wandb_run_id: str | None  # the W&B run to continue (None if the run had no W&B logger)


def resume_candidates(run_dir: Path) -> list[Path]:
    """A run's own checkpoints, most advanced first: stage 2 before stage 1, newest file first."""
    candidates: list[Path] = []
    for stage in ("diffusion", "autoencoder"):
        files = list((run_dir / "checkpoints" / stage).glob("*.ckpt"))
        candidates += sorted(files, key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt"), reverse=True)
    return candidates


def find_resume_checkpoint(cfg: DictConfig, run_dir: Path) -> ResumePoint | None:
    """The checkpoint to resume from (``ckpt_path=PATH`` or ``resume=true``), None for a fresh run.

    ``resume=true`` takes the newest checkpoint that reads back intact; a truncated one (a kill
    mid-write on a file system without atomic renames, a full disk) is skipped with a warning. An
    *unsafe* one is never skipped: its error stops the run.
    """
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        checkpoint = read_checkpoint(path)
    elif cfg.get("resume"):
        for path in resume_candidates(run_dir):
            try:
                checkpoint = read_checkpoint(path)
                break
            except CorruptCheckpointError as error:
                log.warning("resume=true: skipping %s, it is unreadable (%s)", path, error)
        else:
            raise FileNotFoundError(
                f"resume=true found no readable checkpoint under {run_dir / 'checkpoints'}; pass hydra.run.dir=<the "
                "run "
                "to resume> or ckpt_path=PATH"
            )
    else:
        return None
    stage = checkpoint_stage(checkpoint)
    if stage not in ("autoencoder", "diffusion"):
        raise CorruptCheckpointError(f"ckpt_path={str(path)!r} is not a tinyldm training checkpoint (no stage stamp)")
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise CorruptCheckpointError(
            f"{str(path)!r} cannot be resumed from: it lacks {missing}; only full "
            "training checkpoints (checkpoints/<stage>/last.ckpt) can be resumed"
        )
    if stage == "diffusion" and cfg.stage == "autoencoder":
        raise ValueError(f"ckpt_path={str(path)!r} is a diffusion checkpoint but stage=autoencoder")
    refuse_a_budget_past_the_schedule(checkpoint, stage, cfg, path)
    log.info("Resuming the %s stage from %s", stage, path)
    return ResumePoint(path, stage, wandb_run_id(checkpoint))


def refuse_a_budget_past_the_schedule(checkpoint: dict, stage: str, cfg: DictConfig, path: Path) -> None:
    """A resumed stage may not run past the end of the learning-rate schedule it was saved with.

    The one-cycle schedule is sized to the stage's step budget when training starts, and a resume
    restores it as it was. Resumed with a larger ``max_steps``, torch would stop the run with "Tried to
    step N times" at the old budget's end, after all the work up to there; this says so up front.
    """
    key, section = ("diffusion", cfg.diffusion) if stage == "diffusion" else ("model.training", cfg.model.training)
    budget = section.get("max_steps")
    ends = [
        s["total_steps"] for s in checkpoint.get("lr_schedulers") or [] if isinstance(s, dict) and "total_steps" in s
    ]
    if budget is not None and ends and int(budget) > int(ends[0]):
        keep_stage1 = " (stage=diffusion autoencoder_ckpt=<run>/checkpoints/autoencoder.ckpt keeps its stage 1)"
        raise ValueError(
            f"{key}.max_steps={budget} runs past the learning-rate schedule of {str(path)!r}, which ends after "
            f"{ends[0]} optimizer steps: resume with {key}.max_steps={ends[0]} or fewer, or start a new run"
            + (keep_stage1 if stage == "diffusion" else "")
        )
