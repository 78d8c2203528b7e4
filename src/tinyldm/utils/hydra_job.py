"""What every entry point needs from the Hydra job around it: where its files go, what it returns to a sweeper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


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


def given_keys(node: DictConfig | None) -> dict[str, Any]:
    """The keys of ``node`` that hold a value, as plain data; keys left ``???`` are not given.

    Why: ``sample.py`` and ``evaluate.py`` change a checkpoint's stored sampler by the keys a user names
    and keep the rest. Their config lists every key as ``???``, so Hydra refuses a key that does not
    exist, yet none of them has a value until the command line gives one.
    """
    if node is None:
        return {}
    given = {key: node[key] for key in node if not OmegaConf.is_missing(node, key)}
    return OmegaConf.to_container(OmegaConf.create(given), resolve=True)
