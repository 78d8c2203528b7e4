"""The samples file: what ``sample.py`` writes and ``evaluate.py`` reads, in one place.

An ``.npz`` (read with ``allow_pickle=False``: a file from someone else is data, never code) holding

* ``images``: uint8 ``(N, 28, 28)``, the padding cropped;
* ``labels``: int64 ``(N,)``, the class each image was asked for (-1 for an unconditional model, or a
  prompt that names no single class);
* ``prompts`` (text models only): ``(N,)`` fixed-width unicode, the prompt each image was drawn from;
* ``metadata``: a JSON string (sampler settings, seed, checkpoint path), so every evaluation can be
  traced back to the settings that produced it;
* edits (``edit.py``) also hold ``sources``: uint8 ``(N, 28, 28)``, the image each one was made from.

Beside it, a PNG grid of the same images; the two are one output, never half-replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from tinyldm.utils.files import atomic_writes
from tinyldm.utils.images import png_bytes


def check_output_path(out: str | Path, overwrite: bool) -> tuple[Path, Path]:
    """The ``.npz`` and its ``.png`` grid: one output, refused (before any work) if either exists."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"out={str(out)!r} must end in .npz")
    if not out.parent.resolve().is_dir():
        raise FileNotFoundError(f"out={str(out)!r}: folder {str(out.parent)!r} does not exist; create it first")
    grid = out.with_suffix(".png")
    existing = [str(p) for p in (out, grid) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"out={str(out)!r}: {existing} already exist(s); pass overwrite=true to replace the npz and "
            "its grid, or choose another path"
        )
    return out, grid


def write_samples(
    out: Path,
    grid_path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    metadata: dict[str, Any],
    grid: np.ndarray,
    overwrite: bool,
    prompts: list[str] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """Write the npz (uint8 ``images`` (N, 28, 28), ``labels`` (N,), ``metadata``) and its ``grid`` PNG together.

    Both are written atomically and as one (:func:`~tinyldm.utils.files.atomic_writes`): if either write
    fails, e.g. on a full disk, neither is left behind, so the same command can run again. Under a lock on
    ``out``.

    Two runs to one ``out=`` both checked at start-up that it was free; the lock and a second
    check at write time make the later one fail instead of silently replacing the other's result.
    """
    with FileLock(str(out.with_name(f".{out.name}.lock"))):
        existing = [str(p) for p in (out, grid_path) if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(
                f"out={str(out)!r}: {existing} appeared while this run was sampling (another run wrote "
                "them); nothing was written. Pass overwrite=true or choose another path"
            )
        # metadata as a 0-d unicode array and prompts as (N,) '<U..': loadable without pickle
        arrays = {"images": images, "labels": labels.astype(np.int64), "metadata": np.array(json.dumps(metadata))}
        if prompts is not None:
            arrays["prompts"] = np.array(prompts, dtype=np.str_)
        arrays.update(extra or {})  # e.g. an edit's ``sources`` (N, 28, 28) uint8
        with atomic_writes([out, grid_path]) as (npz, png):
            np.savez(npz, **arrays)
            png.write(png_bytes(grid))


def read_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a sample file: arrays ``images`` (uint8 ``(N, 28, 28)``) and ``labels`` (``(N,)``, -1 = none).

    Every other entry is returned in the metadata dict (0-d arrays as Python
    scalars; an entry ``metadata`` holding a JSON string is parsed and merged).
    Contents are not validated here: :func:`tinyldm.evaluation.metrics.validate_samples` does that.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"sample file {str(path)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"sample file {str(path)!r} is a directory, expected an .npz file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as error:  # ValueError (pickle refused), OSError, EOFError: not numpy data at all
        raise ValueError(f"{str(path)!r} is not an .npz archive ({type(error).__name__}: {error})") from error
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{str(path)!r} holds a single .npy array, expected an .npz archive with 'images' and 'labels'"
        )
    try:
        with data:
            arrays = {key: data[key] for key in data.files}
    except Exception as error:  # zipfile.BadZipFile / ValueError for truncated or pickled members
        raise ValueError(f"{str(path)!r} is a corrupt .npz archive ({type(error).__name__}: {error})") from error
    for key in ("images", "labels"):
        if key not in arrays:
            raise ValueError(f"{str(path)!r} has no {key!r} array; it contains {sorted(arrays)}")
    metadata: dict[str, Any] = {}
    for key, value in arrays.items():
        if key in ("images", "labels"):
            continue
        value = value.item() if value.ndim == 0 else value
        if key == "metadata" and isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
            if isinstance(parsed, dict):
                metadata.update(parsed)
                continue
            value = parsed
        metadata[key] = value
    return arrays["images"], arrays["labels"], metadata
