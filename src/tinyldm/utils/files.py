"""Every file tinyldm writes goes through :func:`atomic_write`: it is complete or absent, never half there.

Why: runs get killed (SLURM pre-emption, Ctrl-C, OOM) and sweeps run jobs side by side. A file written
in place can be left truncated by a kill, and two writers of one fixed temp name interleave. So each
write goes to a temp file unique to this process *in the target's own folder* (``os.replace`` is only
atomic within one file system), is flushed and fsync'ed, and then renamed over the target in one
step; a crash before the rename leaves the old file (or none) plus a stray temp file that no reader
ever opens.

``publish=False`` refuses to replace an existing file instead: the rename becomes ``os.link``, which
fails if the target appeared meanwhile, so two writers of one new file cannot silently replace each
other's result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", replace: bool = True) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` for writing; on success it becomes ``path`` in one rename.

    ``replace=False``: raise :class:`FileExistsError` (and write nothing) if ``path`` exists when
    the write completes, even if another process created it while this one was writing.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode={mode!r} is not one of ['wb', 'w']")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic create-if-absent: FileExistsError if someone got there first
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse directory fds)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, data: bytes, replace: bool = True) -> Path:
    with atomic_write(path, "wb", replace=replace) as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, replace: bool = True) -> Path:
    with atomic_write(path, "w", replace=replace) as handle:
        handle.write(text)
    return Path(path)


def plain(value: Any) -> Any:
    """JSON-safe copy: tensors to numbers/lists, non-finite floats to strings, paths to str."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, record: Mapping[str, Any], replace: bool = True) -> dict[str, Any]:
    """Write ``record`` as sorted, indented JSON (atomically); return the JSON-safe copy written."""
    record = plain(dict(record))
    write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n", replace=replace)
    return record


def sha256_of(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
