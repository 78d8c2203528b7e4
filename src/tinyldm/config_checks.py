"""Start-up checks: one per entry point, run before any data are loaded or models trained.

Stage 1 may train for minutes before stage 2 is built, so the stage-2 module is built here once,
on the real latent shape, to surface its parts' errors immediately (each part validates itself when
it is built). Each error names the value and what is allowed.

Building modules draws from the global RNG, so the checks run under ``torch.random.fork_rng``:
``stage=autoencoder`` and ``stage=all`` then train identical stage-1 weights for one seed.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from tinyldm.diffusion.solver import validate_strength
from tinyldm.lit.autoencoder_module import AutoencoderModule
from tinyldm.lit.diffusion_module import LatentDiffusionModule
from tinyldm.utils.checkpoints import require_stage, restore_module
from tinyldm.utils.devices import resolve_device
from tinyldm.utils.instantiate import build

log = logging.getLogger(__name__)
STAGE_CHOICES = ("autoencoder", "diffusion", "all")
# stage lengths live with each stage (model.training.max_steps, diffusion.max_steps); a trainer-wide
# length would apply to both stages at once and was silently overridden
_TRAINER_LENGTH_KEYS = ("max_epochs", "min_epochs", "max_steps", "min_steps", "max_time")


def check_int(value: Any, name: str, minimum: int, allow_none: bool = False) -> None:
    """Refuse anything but an integer >= ``minimum`` (or None when allowed), naming ``name``."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if allow_none else "")
        raise ValueError(f"{name}={value!r} is not allowed: it must be {allowed}")


def check_bool(value: Any, name: str) -> None:
    """Refuse anything but true/false (a typo such as ``channels_last=flase`` would otherwise read as true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not allowed: it must be true or false")


def check_train_config(cfg: DictConfig) -> AutoencoderModule | None:
    """Every value ``train.py`` can refuse before it builds a model: config values and the checkpoint named.

    Returns the stage-1 module read from ``autoencoder_ckpt`` (None without one), so the run reads that
    file once. What needs the run's stage-1 model (its budget, stage 2's parts on its latent shape) is
    :func:`check_train_parts`, called as soon as the run has built that model, still before any data are read.
    """
    with torch.random.fork_rng(devices=[]):
        stage1 = check_stage(cfg)
        check_int(cfg.seed, "seed", 0)
        for key in _TRAINER_LENGTH_KEYS:
            if OmegaConf.select(cfg, f"trainer.{key}") is not None:
                raise ValueError(
                    f"trainer.{key}={OmegaConf.select(cfg, f'trainer.{key}')!r} is not used: each stage sets its own "
                    "length, "
                    "model.training.max_steps (stage 1) and diffusion.max_steps (stage 2), or their max_epochs; "
                    "remove the trainer setting"
                )
        check_int(cfg.model.training.get("batch_size"), "model.training.batch_size", 1, allow_none=True)
        check_bool(cfg.model.training.get("channels_last", False), "model.training.channels_last")
        if cfg.stage in ("diffusion", "all"):
            check_int(cfg.diffusion.batch_size, "diffusion.batch_size", 1)
            check_budget(cfg.diffusion, "diffusion", 1)
            for key in ("channels_last", "compile_unet"):
                check_bool(cfg.diffusion.get(key, False), f"diffusion.{key}")
            check_int(cfg.diffusion.grid.get("every_n_steps", 0), "diffusion.grid.every_n_steps", 0)
            build(cfg.dataset)  # validates the dataset settings; loads nothing yet
            if cfg.evaluation.enabled:
                check_evaluation(cfg.evaluation)
    return stage1


def check_train_parts(cfg: DictConfig, stage1: AutoencoderModule, datamodule: Any) -> None:
    """What needs the run's stage-1 model, checked before any data are read.

    Its budget (a model with nothing to learn, ``model=identity``, may train for 0 steps) and, for
    stage 2, the module with all its parts, built once on its latent shape.
    """
    with torch.random.fork_rng(devices=[]):
        check_budget(cfg.model.training, "model.training", 1 if stage1.autoencoder.is_trainable else 0)
        if cfg.stage in ("diffusion", "all"):
            check_stage2_parts(cfg, stage1, datamodule)


def check_budget(section: DictConfig, name: str, minimum: int) -> None:
    """A stage's length: exactly one of ``max_steps`` (optimizer steps) and ``max_epochs``, never both."""
    steps, epochs = section.get("max_steps"), section.get("max_epochs")
    if (steps is None) == (epochs is None):
        raise ValueError(
            f"{name}.max_steps={steps!r} and {name}.max_epochs={epochs!r}: set exactly one of them "
            f"(the other null), e.g. {name}.max_steps=null {name}.max_epochs=20 to count in epochs"
        )
    if steps is not None:
        check_int(steps, f"{name}.max_steps", minimum)
    else:
        check_int(epochs, f"{name}.max_epochs", minimum)
    check_int(section.get("val_every_n_steps"), f"{name}.val_every_n_steps", 1, allow_none=True)


def check_evaluation(evaluation: DictConfig) -> None:
    check_int(evaluation.n_per_class, "evaluation.n_per_class", 1)
    check_int(evaluation.batch_size, "evaluation.batch_size", 1)
    check_int(evaluation.seed, "evaluation.seed", 0)
    check_int(evaluation.get("classifier_epochs"), "evaluation.classifier_epochs", 1, allow_none=True)
    check_int(evaluation.classifier_members, "evaluation.classifier_members", 1)


def check_device(name: Any) -> None:
    resolve_device(name)  # refuses anything but auto, cpu, cuda


def check_sample_config(cfg: DictConfig) -> None:
    """``sample.py``: every request value, before the checkpoint is read."""
    check_int(cfg.seed, "seed", 0)
    check_int(cfg.n_per_class, "n_per_class", 1)
    check_int(cfg.n, "n", 1, allow_none=True)
    check_int(cfg.batch_size, "batch_size", 1)
    check_int(cfg.grid_per_class, "grid_per_class", 1)
    check_device(cfg.device)
    if cfg.classes is not None:
        classes = list(cfg.classes) if OmegaConf.is_list(cfg.classes) else cfg.classes
        if not isinstance(classes, list) or not classes:
            raise ValueError(f"classes={cfg.classes!r} must be a non-empty list of class indices, e.g. [3,7], or null")
        for c in classes:
            check_int(c, "classes[...]", 0)
    if cfg.get("prompt") is not None and cfg.get("prompts") is not None:
        raise ValueError("give prompt=TEXT or prompts=FILE, not both")
    if cfg.get("negative_class") is not None and cfg.get("negative_prompt") is not None:
        raise ValueError("give negative_class= or negative_prompt=, not both")
    check_int(cfg.get("negative_class"), "negative_class", 0, allow_none=True)
    if (cfg.get("prompt") is not None or cfg.get("prompts") is not None) and cfg.classes is not None:
        raise ValueError(
            "classes= selects labels of a class-conditional model; with prompts the prompts say what to draw"
        )
    if cfg.get("prompt") is not None and not isinstance(cfg.prompt, str):
        raise ValueError(f'prompt={cfg.prompt!r} must be a string (quote it: prompt="a thick 7")')
    if cfg.get("prompts") is not None and not Path(str(cfg.prompts)).is_file():
        raise FileNotFoundError(f"prompts={cfg.prompts!r}: no such file (one prompt per line)")


#: what ``edit.py`` does (``mode=``)
EDIT_MODES = ("img2img", "inpaint", "interpolate")


def check_edit_config(cfg: DictConfig) -> None:
    """``edit.py``: the mode and what it needs, every value refused naming it, before any file is read."""
    if cfg.mode not in EDIT_MODES:
        raise ValueError(f"mode={cfg.mode!r} is not one of {list(EDIT_MODES)}")
    for key, minimum in (("seed", 0), ("batch_size", 1), ("grid_per_row", 1), ("n", 1), ("resample_steps", 1)):
        check_int(cfg[key], key, minimum)
    check_device(cfg.device)
    for one, other in (("target_class", "target_prompt"), ("negative_class", "negative_prompt")):
        if cfg[one] is not None and cfg[other] is not None:
            raise ValueError(f"give {one}= or {other}=, not both")
    for key in ("target_class", "negative_class"):
        check_int(cfg[key], key, 0, allow_none=True)
    if cfg.mode == "interpolate":
        classes, prompts = (cfg.from_class, cfg.to_class), (cfg.from_prompt, cfg.to_prompt)
        if not ((None not in classes and prompts == (None, None)) or (None not in prompts and classes == (None, None))):
            raise ValueError(
                "mode=interpolate needs from_class= and to_class=, or from_prompt= and to_prompt= "
                f"(got from_class={cfg.from_class!r}, to_class={cfg.to_class!r}, "
                f"from_prompt={cfg.from_prompt!r}, to_prompt={cfg.to_prompt!r})"
            )
        for key in ("from_class", "to_class"):
            check_int(cfg[key], key, 0, allow_none=True)
        check_int(cfg.n, "n", 2)
        check_int(cfg.to_seed, "to_seed", 0, allow_none=True)
        return
    if cfg.source is None:
        raise ValueError(f"mode={cfg.mode} needs source=: an .npz, a 28x28 PNG or a folder of them, or heldout")
    if cfg.mode == "img2img":
        try:
            validate_strength(cfg.strength)
        except ValueError as error:
            raise ValueError(f"{error} (strength={cfg.strength!r})") from None


def check_evaluate_config(cfg: DictConfig) -> None:
    """``evaluate.py``: what to score and how, before any file is read."""
    if bool(cfg.samples) == bool(cfg.ckpt):
        raise ValueError(
            f"give exactly one of samples=PATH.npz or ckpt=PATH.ckpt (got samples={cfg.samples!r}, ckpt={cfg.ckpt!r})"
        )
    check_int(cfg.seed, "seed", 0)
    check_device(cfg.device)
    check_evaluation(cfg.evaluation)


def check_stage(cfg: DictConfig) -> AutoencoderModule | None:
    """Check ``stage`` and the stage-1 checkpoint it needs; return that checkpoint's module (or None)."""
    if cfg.stage not in STAGE_CHOICES:
        raise ValueError(f"stage={cfg.stage!r} is not one of {list(STAGE_CHOICES)}")
    if cfg.stage == "diffusion" and not cfg.get("autoencoder_ckpt"):
        raise ValueError(
            "stage=diffusion needs autoencoder_ckpt=PATH (a stage-1 checkpoint); "
            "or use stage=all to train/reuse stage 1 first"
        )
    if not cfg.get("autoencoder_ckpt"):
        return None
    path = Path(cfg.autoencoder_ckpt)
    return restore_module(AutoencoderModule, require_stage(path, "autoencoder"), path)


def check_stage2_parts(cfg: DictConfig, stage1: AutoencoderModule, datamodule: Any) -> LatentDiffusionModule:
    """Build the stage-2 module once on the run's latent shape (cheap), so every bad part value fails now.

    Each part validates itself when it is built (UNet, conditioner, noise schedule, solver, guidance, loss,
    EMA); what is checked here needs the data: the conditioner's classes against the dataset's. Returns the
    module (untrained, on a stage-1 model of its own), for a caller that wants to look at it.
    """
    from tinyldm.training.stage2 import module_from_config  # the one stage-2 builder

    latent_shape = stage1.autoencoder.latent_shape(datamodule.image_shape)
    # on a copy of the run's stage-1 model: the module freezes the one it is given, and this one has yet to train
    autoencoder = copy.deepcopy(stage1.autoencoder)
    module = module_from_config(cfg, latent_shape, dict(stage1.hparams.autoencoder), datamodule.pad, autoencoder)
    conditioner = module.denoiser.conditioner
    model_classes = getattr(conditioner, "num_classes", 0)
    if conditioner.is_conditional and model_classes != datamodule.num_classes:
        raise ValueError(
            f"conditioner.num_classes={model_classes} but dataset {cfg.dataset.name!r} has "
            f"{datamodule.num_classes} classes"
        )
    if conditioner.is_conditional and module.denoiser.unet.transformer_depth == 0:
        # legitimate as an ablation baseline, but easy to do by accident
        log.warning(
            "unet.transformer_depth=0: the UNet has no cross-attention, so the class labels cannot reach it "
            "and the model trains as an unconditional one (guidance has no effect)"
        )
    return module
