"""Shared fixtures: compose the real Hydra configs (the run helpers live in ``tests/helpers/runs.py``).

Tests keep torch to one thread per process (pytest-xdist runs two workers on two cores; two
multi-threaded torch processes slow each other down far more than 2x).
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.runs import CONFIG_DIR, path_overrides

torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture()
def compose(tmp_path):
    """compose(config_name, overrides) -> DictConfig with paths pointing into tmp_path."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    def _compose(overrides: list[str] | None = None, config_name: str = "train"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(
                config_name=config_name,
                overrides=[
                    f"paths.root_dir={tmp_path}",
                    f"paths.output_dir={tmp_path}/run",
                    *path_overrides(tmp_path),
                    *(overrides or []),
                ],
            )

    yield _compose
    GlobalHydra.instance().clear()
