"""The stage-1 cache: an autoencoder trained once per (stage-1 config, data, seed), reused by later runs.

Sweeps run many jobs that share one stage-1 config (``-m unet.transformer_depth=0,1,2``), locally
side by side or as a SLURM array, so the cache is built for concurrent and interrupted writers:

* **Key**: a hash of everything that changes stage 1's weights: the model config (architecture and
  training), the dataset settings, the *data actually read* (:meth:`DigitsDataModule.fingerprint`:
  the offline 5k fallback and full MNIST get different entries), the seed and the trainer settings
  that change the optimisation (precision, devices, accumulation, clipping, ...).
* **Lock**: a file lock (``filelock``) per key is held from the look-up through training to the
  store, so of N jobs with one key the first trains and the others wait, then reuse its entry.
* **Completion marker**: an entry is ``autoencoder.ckpt`` + ``config.yaml`` + ``complete.json``,
  each written atomically, the marker last; it holds the checkpoint's SHA-256 and the stage-1
  metrics. An entry without a marker (a run killed while storing it) or whose checkpoint no longer
  matches the checksum or cannot be read is retrained, with a warning saying which.

Entry layout: ``<cache_dir>/autoencoders/<model>-<hash>/{autoencoder.ckpt,config.yaml,complete.json}``,
locks beside the entries as ``<model>-<hash>.lock``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from tinyldm.utils.checkpoints import CheckpointError, UnsafeCheckpointError, require_stage
from tinyldm.utils.files import atomic_write, sha256_of, write_json, write_text

log = logging.getLogger(__name__)
MARKER_FORMAT = "tinyldm-autoencoder-cache-1"

# settings that change how fast or how verbosely stage 1 runs, not the weights it ends with
_DATASET_KEYS_NOT_IN_KEY = ("num_workers", "pin_memory", "root", "source")  # the data fingerprint replaces root/source
_TRAINER_KEYS_NOT_IN_KEY = (
    "_target_",
    "log_every_n_steps",
    "enable_model_summary",
    "enable_progress_bar",
    "enable_checkpointing",
    "num_sanity_val_steps",
    "check_val_every_n_epoch",
    "limit_val_batches",
    "val_check_interval",
    "default_root_dir",
    "logger",
    "callbacks",
    "profiler",
)


def stage1_identity(cfg: DictConfig, data_fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that determines a stage-1 model's weights (what the cache key hashes)."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    return {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "dataset": {k: v for k, v in dataset.items() if k not in _DATASET_KEYS_NOT_IN_KEY},
        "data": dict(data_fingerprint),
        "seed": int(cfg.seed),
        "trainer": {k: v for k, v in trainer.items() if k not in _TRAINER_KEYS_NOT_IN_KEY},
    }


@dataclass(frozen=True)
class CacheHit:
    checkpoint: Path
    metrics: dict[str, Any]
    state_dict: Mapping[str, Any]  # the entry's weights, read (and checked) once


class AutoencoderCache:
    """One entry of the stage-1 cache (see the module docstring)."""

    def __init__(self, cache_dir: str | Path, identity: Mapping[str, Any]) -> None:
        self.identity = json.loads(json.dumps(dict(identity), sort_keys=True, default=str))
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]
        self.key = f"{self.identity['model'].get('name', 'model')}-{digest}"
        self.entry = Path(cache_dir) / "autoencoders" / self.key
        self.checkpoint = self.entry / "autoencoder.ckpt"
        self.marker = self.entry / "complete.json"
        self.lock_path = self.entry.parent / f"{self.key}.lock"

    @classmethod
    def for_run(cls, cfg: DictConfig, datamodule: Any) -> AutoencoderCache:
        return cls(cfg.paths.cache_dir, stage1_identity(cfg, datamodule.fingerprint()))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this entry's lock; says so when another run holds it (it is training this entry)."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info(
                "Another run is training or storing stage-1 cache entry %s; waiting for it (lock %s)",
                self.key,
                self.lock_path,
            )
            start = time.perf_counter()
            lock.acquire()
            log.info("Got the stage-1 cache lock after %.0f s", time.perf_counter() - start)
        try:
            yield
        finally:
            lock.release()

    def lookup(self) -> CacheHit | None:
        """The entry if it is complete and intact; None (with a warning saying why) otherwise.

        A checkpoint that is *unsafe* (code in its pickle, targets outside the allow-list) is not
        silently retrained over: the error propagates, naming the file.
        """
        if not self.entry.exists():
            return None
        problem, checkpoint = self._check()
        if problem is None:
            marker = json.loads(self.marker.read_text())
            return CacheHit(self.checkpoint, dict(marker.get("metrics") or {}), checkpoint["state_dict"])
        log.warning("Stage-1 cache entry %s is unusable: %s. Retraining it.", self.entry, problem)
        return None

    def _check(self) -> tuple[str | None, dict[str, Any] | None]:
        """(None, the checkpoint read) for an intact entry, else (what is wrong with it, None)."""
        if not self.marker.exists():
            return "it has no completion marker (complete.json), so the run storing it was interrupted", None
        try:
            marker = json.loads(self.marker.read_text())
        except (OSError, json.JSONDecodeError) as error:
            return f"its completion marker is unreadable ({error})", None
        if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
            return f"its completion marker is not a {MARKER_FORMAT} file", None
        if not self.checkpoint.exists():
            return "its checkpoint is missing", None
        if sha256_of(self.checkpoint) != marker.get("checkpoint_sha256"):
            return "its checkpoint does not match the checksum in complete.json (truncated or modified)", None
        try:
            checkpoint = require_stage(self.checkpoint, "autoencoder")
        except UnsafeCheckpointError:
            raise
        except CheckpointError as error:
            return str(error), None
        return None, checkpoint

    def store(self, checkpoint: Path, metrics: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        """Copy a trained stage-1 checkpoint in; the marker goes last, so a kill leaves an incomplete entry."""
        self.entry.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.marker.unlink()  # from here until the new marker, the entry is incomplete
        with open(checkpoint, "rb") as source, atomic_write(self.checkpoint) as target:
            shutil.copyfileobj(source, target)
        write_text(self.entry / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(dict(config))))
        write_json(
            self.marker,
            {
                "format": MARKER_FORMAT,
                "key": self.key,
                "checkpoint_sha256": sha256_of(self.checkpoint),
                "metrics": dict(metrics),
                "identity": self.identity,
            },
        )
        log.info("Stored the stage-1 checkpoint in the cache: %s", self.checkpoint)
