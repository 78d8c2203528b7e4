"""What every entry point needs from the Hydra job around it: where its files go, what it returns to a sweeper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def run_dir_of(cfg: DictConfig) -> Path:
    """The job's output folder: Hydra's run (or sweep job) directory, else ``paths.output_dir`` (compose API)."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def optimized_metric(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The value a hyperparameter sweeper minimises or maximises (``optimized_metric`` in the config).

    None when no metric is named (or the run could not compute it, e.g. FID on too few samples); a
    name the run does not report is an error naming the ones it does, since a sweeper would otherwise
    optimise nothing without saying so.
    """
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} is not among the run's metrics: {sorted(metrics)}")
    value = metrics[name]
    return None if value is None else float(value)
