"""Reading and writing checkpoints: a checkpoint is data, never code.

Every checkpoint tinyldm reads -- ``sample.py ckpt=``, ``evaluate.py ckpt=``, ``autoencoder_ckpt=``,
``ckpt_path=`` / ``resume=true``, a stage-1 cache entry, the notebook -- goes through
:func:`read_checkpoint`:

* ``torch.load(weights_only=True)``: the unpickler builds tensors and plain containers only, so a
  pickled ``__reduce__`` payload is refused instead of run. (torch >= 2.10: earlier releases had
  weights-only bypasses, CVE-2025-32434 before 2.6 and CVE-2026-24747 before 2.10.)
* the stored configs' ``_target_`` strings must name classes inside the allow-list of
  :mod:`tinyldm.utils.instantiate`, checked before anything is built;
* the structure is checked (``state_dict`` of tensors, hyper-parameters a dict), so a foreign or
  hand-made file fails here with its name in the message rather than deep inside Lightning.

Lightning reads resume checkpoints itself (``trainer.fit(ckpt_path=...)``) and writes every
checkpoint; :class:`SafeCheckpointIO`, installed in every Trainer, routes both through here, so
resume reads are just as safe and every checkpoint is written atomically.

Every checkpoint tinyldm writes carries ``checkpoint["tinyldm"] = {"stage": ..., "version": ...}``
so a stage-2 file passed where a stage-1 file is expected is refused with a message.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.loggers import WandbLogger

from tinyldm.utils.files import save_torch
from tinyldm.utils.instantiate import UnsafeTargetError, check_file_targets

STAGES = ("autoencoder", "diffusion")
ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and why."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds more than tensors and plain data, or names code outside the allow-list."""


class CorruptCheckpointError(CheckpointError):
    """The file is not a readable checkpoint (truncated, not a zip/pickle, wrong structure)."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict on CPU as data only; raise FileNotFoundError / CheckpointError naming ``path``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CorruptCheckpointError(f"checkpoint {str(path)!r} is a directory, expected a .ckpt file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" in str(error).lower():  # the unpickler was asked for a callable/class: a payload
            raise UnsafeCheckpointError(
                f"{str(path)!r} is unsafe: it asks to load objects other than tensors and plain data, which tinyldm "
                f"never does ({_first_line(error)}). Only load checkpoints written by tinyldm."
            ) from None
        raise CorruptCheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint (malformed: {_first_line(error)})"
        ) from None
    except Exception as error:  # zip / EOF / runtime errors: a truncated or foreign file
        raise CorruptCheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint (truncated or not a checkpoint: "
            f"{type(error).__name__}: {_first_line(error)})"
        ) from None
    check_structure(checkpoint, path)
    return checkpoint


def _first_line(error: Exception) -> str:
    """torch's weights-only errors run to a page; the first line says what was refused."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    unsupported = next(
        (line for line in lines if "Unsupported" in line), None
    )  # e.g. "Unsupported global: GLOBAL builtins.exec"
    return (unsupported or text).strip()[:300]


def check_structure(checkpoint: Any, path: str | Path) -> None:
    """The shape every tinyldm checkpoint has; the stored configs' targets inside the allow-list."""
    where = f"checkpoint {str(path)!r}"
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CorruptCheckpointError(f"{where} is not a Lightning checkpoint (no 'state_dict' entry)")
    bad = [key for key, value in checkpoint["state_dict"].items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CorruptCheckpointError(f"{where} is malformed: state_dict entries {bad[:3]} are not tensors")
    for key in ("hyper_parameters", "tinyldm"):
        if checkpoint.get(key) is not None and not isinstance(checkpoint[key], Mapping):
            raise CorruptCheckpointError(
                f"{where} is malformed: {key!r} is a {type(checkpoint[key]).__name__}, not a dict"
            )
    try:
        check_file_targets(checkpoint.get("hyper_parameters") or {}, where)
    except UnsafeTargetError as error:
        raise UnsafeCheckpointError(str(error)) from None


def checkpoint_stage(checkpoint: Mapping[str, Any]) -> str | None:
    return (checkpoint.get("tinyldm") or {}).get("stage")


def require_stage(path: str | Path, expected: str) -> dict[str, Any]:
    """Read ``path`` and check it was written by stage ``expected`` (``autoencoder``/``diffusion``)."""
    if expected not in STAGES:
        raise ValueError(f"expected stage {expected!r} is not one of {list(STAGES)}")
    checkpoint = read_checkpoint(path)
    stage = checkpoint_stage(checkpoint)
    if stage != expected:
        found = f"a {stage} (stage {STAGES.index(stage) + 1})" if stage in STAGES else "not a tinyldm"
        raise CheckpointError(
            f"{str(path)!r} is {found} checkpoint, but a {expected} (stage {STAGES.index(expected) + 1}) "
            "checkpoint is required here"
        )
    return checkpoint


def restore_module(cls: type[ModuleT], checkpoint: Mapping[str, Any], path: str | Path) -> ModuleT:
    """Build ``cls`` from a checkpoint already read by :func:`read_checkpoint`, weights included.

    What ``cls.load_from_checkpoint`` does, minus its second (unchecked) read of the file, and with
    errors that name the file: missing hyper-parameters, unknown ones, weights of another shape.
    """
    where = f"checkpoint {str(path)!r}"
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    upgrade = getattr(cls, "upgrade_hyperparameters", None)  # what an earlier release stored, as cls takes it now
    if upgrade is not None:
        try:
            hparams = upgrade(hparams)
        except (TypeError, ValueError, KeyError) as error:
            raise CorruptCheckpointError(
                f"{where} is malformed: its hyper-parameters cannot be read ({type(error).__name__}: {error})"
            ) from error
    required = [
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    missing = [name for name in required if name not in hparams]
    if missing:
        raise CorruptCheckpointError(
            f"{where} is malformed: its hyper-parameters lack {missing}, which a {cls.__name__} needs"
        )
    try:
        module = cls(**hparams)
    except (TypeError, ValueError, KeyError) as error:
        raise CorruptCheckpointError(
            f"{where} is malformed: building {cls.__name__} from its hyper-parameters "
            f"failed ({type(error).__name__}: {error})"
        ) from error
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CorruptCheckpointError(
            f"{where} is malformed: its weights do not fit the model its hyper-parameters describe ({str(error)[:300]})"
        ) from None
    return module


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with :func:`read_checkpoint` for reads and atomic writes.

    Reads ignore Lightning's ``weights_only`` argument: they are always weights-only and allow-list
    checked, whatever the Lightning version's default.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"storage_options={storage_options!r} is not supported by {type(self).__name__}")
        save_torch(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)


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


def wandb_run_id(checkpoint: Mapping[str, Any]) -> str | None:
    """The W&B run a checkpoint was logged to (None when it was written without W&B)."""
    return (checkpoint.get("tinyldm") or {}).get("wandb_run_id")
