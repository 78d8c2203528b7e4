"""Logger construction that never blocks a run.

``wandb.init`` raises without an API key and, with a key but no network, can hang for minutes.
``mode=auto`` therefore goes online only when W&B is visibly set up, and offline otherwise; the
offline run can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)
WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_is_configured() -> bool:
    """True when an API key is available through the environment or ``wandb login`` (~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(netrc_path).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.wandb.mode={mode!r} is not one of {list(WANDB_MODES)}")
    env_mode = os.environ.get("WANDB_MODE")
    if mode == "auto" and env_mode in WANDB_MODES[1:]:
        return env_mode
    if mode == "auto":
        return "online" if wandb_is_configured() else "offline"
    return mode


def _sweep_name() -> str | None:
    """Name of the Hydra sweep this job belongs to (None outside a multirun)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        config = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    return Path(config.sweep.dir).name if config.mode == RunMode.MULTIRUN else None


def wandb_logger(mode: str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbLogger:
    """Build a :class:`WandbLogger` whose mode never triggers a login prompt."""
    resolved = resolve_wandb_mode(mode)
    if resolved == "offline":
        log.info("W&B is not set up (no WANDB_API_KEY / wandb login): logging offline to %s/wandb; "
                 "upload later with `wandb sync %s/wandb/offline-run-*`", save_dir, save_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "group" not in kwargs and (sweep := _sweep_name()) is not None:
        kwargs["group"] = sweep  # every job of a multirun lands in one W&B group
    if "tags" in kwargs:
        kwargs["tags"] = list(kwargs["tags"])
    return WandbLogger(save_dir=save_dir, mode=resolved, **kwargs)
