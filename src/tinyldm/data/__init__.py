"""Dataset layer: IDX parsing, data-source resolution and the Lightning DataModule."""

from tinyldm.data.datamodule import DigitsDataModule
from tinyldm.data.idx import read_idx, write_idx
from tinyldm.data.sources import DataArrays, class_names_for, load_arrays

__all__ = [
    "DigitsDataModule",
    "DataArrays",
    "load_arrays",
    "read_idx",
    "write_idx",
    "class_names_for",
]
