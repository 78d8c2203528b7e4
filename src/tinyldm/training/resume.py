"""Continuing a run: which checkpoint to resume from, and refusing to overwrite a run that exists.

A run directory that already holds a run is only ever continued (``resume=true`` / ``ckpt_path=``),
never overwritten: re-running into it would replace ``autoencoder.ckpt`` under an older
``diffusion.ckpt`` built on the previous autoencoder, and mix two runs' results in one ``metrics.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
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
    shapes: dict[str, tuple[int, ...]]  # each stored weight's shape: what the run's model must match
    hparams: dict[str, Any]  # the stored configs the checkpoint's model was built from


# the module's hyper-parameters that are whole config groups; the rest are keys of the stage's own section
_GROUP_OF = {
    "autoencoder": "model.net",
    "unet": "unet",
    "conditioner": "conditioner",
    "scheduler": "scheduler",
    "sampler": "sampler",
    "seed": "seed",
    "latent_shape": "the latent shape (model.net)",
}
_SECTION_OF = {"autoencoder": "model.training", "diffusion": "diffusion"}
# weights a resume may add or drop on purpose (the autoguidance guide follows diffusion.guide_at)
_OPTIONAL_WEIGHTS = ("guide.", "guide_taken_at")


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
    shapes = {key: tuple(value.shape) for key, value in checkpoint["state_dict"].items()}
    return ResumePoint(path, stage, wandb_run_id(checkpoint), shapes, dict(checkpoint.get("hyper_parameters") or {}))


def refuse_a_model_that_does_not_fit(module: torch.nn.Module, resume: ResumePoint) -> None:
    """Resuming needs the run's model to be the checkpoint's: refuse another one before training, saying how.

    Lightning would stop in ``load_state_dict`` with torch's raw list of keys, after the data and latents
    are prepared. This names the weights that do not fit (missing, unexpected, of another shape) and
    the config keys whose values differ between the checkpoint and this run.
    """
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    optional = [key for key in {*expected, *resume.shapes} if key.startswith(_OPTIONAL_WEIGHTS)]
    for key in optional:
        expected.pop(key, None)
    stored = {key: shape for key, shape in resume.shapes.items() if key not in optional}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    reshaped = [
        f"{key}: {stored[key]} in the checkpoint, {expected[key]} here"
        for key in expected
        if key in stored and stored[key] != expected[key]
    ]
    if not (missing or unexpected or reshaped):
        return
    problems = []
    for what, keys in (("missing from it", missing), ("unexpected in it", unexpected), ("of another shape", reshaped)):
        if keys:
            problems.append(f"{len(keys)} weights {what} ({'; '.join(keys[:4])}{'; ...' if len(keys) > 4 else ''})")
    differing = config_differences(resume.hparams, dict(getattr(module, "hparams", {})), resume.stage)
    configs = (
        "the configs differ in " + "; ".join(differing[:8]) + ("; ..." if len(differing) > 8 else "")
        if differing
        else "its stored configs match this run's, so the weights were changed by hand"
    )
    raise ValueError(
        f"cannot resume from {str(resume.path)!r}: its {resume.stage} model is not this run's model: "
        f"{', '.join(problems)}; {configs}. Resume with the checkpoint's settings, or start a new run "
        "(leave ckpt_path and resume unset)"
    )


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any], stage: str) -> list[str]:
    """``key: checkpoint value -> this run's value`` for every leaf that differs, named as the config names it."""
    differences = []
    flat_stored, flat_current = _flatten(stored), _flatten(current)
    for key in sorted(set(flat_stored) | set(flat_current)):
        before, after = flat_stored.get(key, "unset"), flat_current.get(key, "unset")
        if before != after:
            differences.append(f"{_config_key(key, stage)}: {before!r} in the checkpoint, {after!r} here")
    return differences


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, Mapping):
        flat: dict[str, Any] = {}
        for key, value in config.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(config, tuple):
        config = list(config)
    return {prefix[:-1]: config}


def _config_key(key: str, stage: str) -> str:
    """A module hyper-parameter's dotted name as the run's config spells it (``unet.base_channels``)."""
    head, _, rest = key.partition(".")
    if head in _GROUP_OF:
        return ".".join(filter(None, (_GROUP_OF[head], rest)))
    return f"{_SECTION_OF[stage]}.{key}"


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
