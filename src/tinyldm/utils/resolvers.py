"""OmegaConf resolvers the configs use; registered when ``tinyldm`` is imported.

``${launch_dir:}`` is the directory the command was started from. Hydra's own
``${hydra:runtime.cwd}`` only resolves inside a job, but the multirun sweeper resolves
``hydra.sweep.dir`` (which is built from ``paths.log_dir``) before any job exists, so
``paths.root_dir`` cannot use it. Jobs never change directory (``hydra.job.chdir=false``),
so the current directory is the launch directory in every job as well.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("launch_dir"):
        OmegaConf.register_new_resolver("launch_dir", os.getcwd)
