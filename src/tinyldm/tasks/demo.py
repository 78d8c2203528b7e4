"""``python demo.py``: serve :mod:`tinyldm.demo` for one model on this machine, offline."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tinyldm.config_checks import check_device, check_int
from tinyldm.demo import Demo, build_app, serve
from tinyldm.pipeline import LatentDiffusionPipeline
from tinyldm.utils.devices import resolve_device

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Any:
    check_int(cfg.port, "port", 1)
    if cfg.port > 65535:
        raise ValueError(f"port={cfg.port} is not allowed: it must be an integer from 1 to 65535")
    check_int(cfg.max_images, "max_images", 1)
    check_device(cfg.device)
    if not isinstance(cfg.host, str) or not cfg.host:
        raise ValueError(f"host={cfg.host!r} is not allowed: an address to serve on, e.g. 127.0.0.1")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before Gradio is imported: nothing leaves the machine
    pipeline = LatentDiffusionPipeline.load(cfg.ckpt, resolve_device(cfg.device))
    app = build_app(Demo(pipeline, int(cfg.max_images)), title=f"tinyldm: {Path(str(cfg.ckpt)).name}")
    log.info("Serving the demo for %s on http://%s:%d", cfg.ckpt, cfg.host, cfg.port)
    return serve(app, str(cfg.host), int(cfg.port))
