"""Files a run leaves behind: metrics.json and the stage-1 cache key.

``metrics.json`` is written atomically (temp file + rename) so a crash never leaves half a file,
and merged rather than replaced so both stages (and the final evaluation) add to the same record.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def update_metrics_file(path: str | Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``metrics`` into the JSON file at ``path`` (created if missing); return the whole record."""
    path = Path(path)
    record: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    record.update(_plain(dict(metrics)))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return record


# dataset keys that change how fast data load, not what is learned
_LOADER_ONLY_KEYS = ("num_workers", "pin_memory")


def stage1_cache_key(cfg: DictConfig) -> str:
    """Hash of everything that determines a stage-1 model: model, data, seed and precision."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    for key in _LOADER_ONLY_KEYS:
        dataset.pop(key, None)
    identity = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "dataset": dataset,
        "seed": cfg.seed,
        "precision": str(cfg.trainer.get("precision")),
        "limit_train_batches": cfg.trainer.get("limit_train_batches"),
    }
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return f"{cfg.model.name}-{hashlib.sha256(blob).hexdigest()[:16]}"
