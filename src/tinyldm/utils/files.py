"""Every file tinyldm writes goes through :func:`atomic_write`: it is complete or absent, never half there.

Why: runs get killed (SLURM pre-emption, Ctrl-C, OOM) and sweeps run jobs side by side. A file written
in place can be left truncated by a kill, and two writers of one fixed temp name interleave. So each
write goes to a temp file unique to this process *in the target's own folder* (``os.replace`` is only
atomic within one file system), is flushed and fsync'ed, and then renamed over the target in one
step; a crash before the rename leaves the old file (or none) plus a stray temp file that no reader
ever opens.

``replace=False`` refuses to replace an existing file instead: the rename becomes ``os.link``, which
fails if the target appeared meanwhile, so two writers of one new file cannot silently replace each
other's result.

Several files that form one output (a samples ``.npz`` and its grid) go through :func:`atomic_writes`:
all are written and synced before the first is renamed, so a failed write leaves none of them.

A write that fails because the disk (or the user's quota) is full raises :class:`DiskFullError`, which
says so and that nothing was kept, instead of torch's or the OS's bare error from deep inside a save.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch


class DiskFullError(OSError):
    """A write failed because the disk or quota is full; its partial files were removed, nothing was kept."""


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_writes(paths: Sequence[str | Path], mode: str = "wb", replace: bool = True) -> Iterator[list[IO[Any]]]:
    """Open a temp file beside each of ``paths``; once every one is written and synced, each becomes its path.

    The files are one output: a failure while any is written publishes none. ``replace=False``: raise
    :class:`FileExistsError` (and publish none) if one of ``paths`` exists when the writes complete.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode={mode!r} is not one of ['wb', 'w']")
    targets = [Path(path) for path in paths]
    temps = [target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp") for target in targets]
    published: list[Path] = []
    try:
        try:
            with contextlib.ExitStack() as stack:
                handles = []
                for target, temp in zip(targets, temps, strict=True):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    handles.append(
                        stack.enter_context(open(temp, mode, **({} if mode == "wb" else {"encoding": "utf-8"})))
                    )
                yield handles
                for handle in handles:
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as error:
            if error.errno in _DISK_FULL:
                names = ", ".join(repr(str(target)) for target in targets)
                raise DiskFullError(
                    error.errno,
                    f"the disk is full ({os.strerror(error.errno)}) while writing {names}: nothing was kept (the "
                    f"partial file is removed; what was there before is unchanged). Free some space and run again",
                ) from error
            raise
        for target, temp in zip(targets, temps, strict=True):
            if replace:
                os.replace(temp, target)
            else:
                os.link(temp, target)  # atomic create-if-absent: FileExistsError if someone got there first
                published.append(target)
        for folder in {target.parent for target in targets}:
            _fsync_dir(folder)
    except FileExistsError:
        for target in published:  # created by this call a moment ago: one output is all or nothing
            target.unlink()
        raise
    finally:
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", replace: bool = True) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` for writing; on success it becomes ``path`` in one rename.

    ``replace=False``: raise :class:`FileExistsError` (and write nothing) if ``path`` exists when
    the write completes, even if another process created it while this one was writing.
    """
    with atomic_writes([path], mode, replace) as (handle,):
        yield handle


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse directory fds)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, data: bytes | memoryview, replace: bool = True) -> Path:
    with atomic_write(path, "wb", replace=replace) as handle:
        handle.write(data)
    return Path(path)


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically. Serialised in memory first: torch's own writer turns a failed file write
    (a full disk) into an opaque internal error, a plain write raises :class:`DiskFullError`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getbuffer())


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
