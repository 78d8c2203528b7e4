"""Building objects from Hydra configs: clear errors, and an allow-list for configs read from files.

Hydra wraps any constructor error in an ``InstantiationException`` whose message buries the
original. Our constructors raise ``ValueError``s that already name the bad value and what is
allowed, so :func:`build` re-raises those as they are (the Hydra context stays chained).

A checkpoint stores the configs its modules were built from, ``_target_`` strings included, and
building from them calls whatever they name. Targets from the user's own config are the user's
business; targets read from a *file* (a shared checkpoint, a cache entry) must resolve inside
:data:`ALLOWED_TARGET_MODULES` and name a class. Hydra's own target policy is a best-effort blocklist, so
:func:`check_file_targets` resolves every target itself and checks where the object really lives:
``tinyldm.utils.files.os.system`` starts with ``tinyldm.`` but is ``os.system``, and is refused.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, RuntimeError, KeyError)

# modules whose classes a file may name: the project's own and torch's optimisers / LR schedulers.
# Classes only: tinyldm's *functions* include file writers, which a crafted file could aim anywhere.
ALLOWED_TARGET_MODULES = ("tinyldm", "torch.optim")

#: ``_target_``s that earlier releases stored and that name no class now. Configs holding them are converted by
#: the code that reads them (``from_legacy_config``, ``split_legacy_sampler``), never built, so a file may
#: name them.
LEGACY_TARGETS = frozenset(
    {
        "tinyldm.diffusion.DDPMScheduler",
        "tinyldm.diffusion.DDIMScheduler",
        "tinyldm.diffusion.DPMSolverMultistepScheduler",
        "tinyldm.diffusion.DiffusionSampler",
    }
)


class UnsafeTargetError(ValueError):
    """A ``_target_`` read from a file names something outside :data:`ALLOWED_TARGET_MODULES`."""


def build(config: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return instantiate(config, *args, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, _USER_ERRORS):
            raise cause from error
        raise


def _in_allowed_module(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in ALLOWED_TARGET_MODULES)


def _resolve_allowed(target: str) -> Any:
    """Import the longest importable module prefix of ``target`` (inside the allow-list) and getattr the rest."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        if not _in_allowed_module(module_name):
            break
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)  # AttributeError: handled by the caller
        return obj
    raise ImportError(f"no module of {target!r} can be imported")


def check_target(target: Any, where: str) -> None:
    """Refuse ``target`` unless it names a class defined in an allowed module."""
    allowed = f"only classes from {', '.join(m + '.*' for m in ALLOWED_TARGET_MODULES)} may be named by a file"
    if isinstance(target, str) and target in LEGACY_TARGETS:
        return
    if not isinstance(target, str) or not target:
        raise UnsafeTargetError(f"{where}: _target_={target!r} is not a dotted name; {allowed}")
    parts = target.split(".")
    if any(not part.isidentifier() or part.startswith("_") for part in parts) or not _in_allowed_module(target):
        raise UnsafeTargetError(f"{where} is unsafe: _target_={target!r} is outside the allow-list; {allowed}")
    try:
        obj = _resolve_allowed(target)
    except (ImportError, AttributeError) as error:
        raise UnsafeTargetError(f"{where}: _target_={target!r} cannot be resolved ({error}); {allowed}") from None
    module = getattr(obj, "__module__", None) or ""
    if not inspect.isclass(obj) or not _in_allowed_module(module):
        raise UnsafeTargetError(
            f"{where} is unsafe: _target_={target!r} resolves to {obj!r} from module {module or '?'!r}; {allowed}"
        )


def check_file_targets(config: Any, where: str) -> None:
    """Check every ``_target_`` in a nested config read from a file; refuse interpolations too.

    Interpolations (``${oc.env:...}``) would be resolved when the config is built: a file could read
    the reader's environment into a model. Configs tinyldm stores are always resolved, so a file
    that holds one is refused.
    """
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key == "_target_":
                check_target(value, where)
            else:
                check_file_targets(value, where)
    elif isinstance(config, (list, tuple)):
        for value in config:
            check_file_targets(value, where)
    elif isinstance(config, str) and "${" in config:
        raise UnsafeTargetError(
            f"{where} is unsafe: it holds the interpolation {config!r}; stored configs must be resolved"
        )
