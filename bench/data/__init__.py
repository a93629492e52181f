"""Datasets as uint8 tensors, decoded once and cached; batches cut and augmented on the device.

`load_dataset("cifar10@5k", settings)` returns an `ImageData`; `DeviceData` moves it to the training
device and yields normalised, augmented batches. Sources register in `DATASETS` (see `sources.py`).
"""

from bench.data.batches import DeviceData
from bench.data.core import (
    DATASETS,
    DataSettings,
    ImageData,
    dataset_sizes,
    load_dataset,
    parse_dataset_name,
    stratified_subset,
)

__all__ = [
    "DATASETS",
    "DataSettings",
    "DeviceData",
    "ImageData",
    "dataset_sizes",
    "load_dataset",
    "parse_dataset_name",
    "stratified_subset",
]

from bench.data import sources as _sources  # noqa: E402,F401  (fills DATASETS)
