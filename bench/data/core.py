"""The dataset record, the registry of sources, the on-disk cache and reduced training sets.

A source decodes its raw files once into an `ImageData` of uint8 tensors (N, C, H, W); the result is
saved atomically to a cache file keyed by the source, its root and its settings, so later jobs load a
single tensor file. `NAME@Nk` names a class-stratified, seeded subset of NAME's training set (the test
set is kept whole): the paper's "reduced training samples" tables use cifar10@5k, imagenet-sub@10k
and cifar100@5k.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from bench.atomic import torch_save
from bench.errors import BenchError
from bench.registry import Registry


@dataclass(frozen=True)
class DataSettings:
    """Where data comes from; not part of a job's identity (it differs between machines)."""

    data_root: str | None = field(default=None, metadata={"help": "folder holding the dataset's files"})
    download: bool = field(default=False, metadata={"help": "let torchvision download CIFAR if missing"})
    cache_dir: str | None = field(
        default=None, metadata={"help": "uint8 tensor cache (default $PRUNEBENCH_CACHE or ~/.cache/prunebench)"}
    )
    image_size: int = field(default=32, metadata={"help": "side length ImageFolder images are resized to"})
    subset_seed: int = field(
        default=0, metadata={"help": "seed of the NAME@Nk training subset and the imagenet-sub sample"}
    )
    imagenet_train_size: int = field(default=100_000, metadata={"help": "imagenet-sub training images"})
    imagenet_test_size: int = field(default=10_000, metadata={"help": "imagenet-sub test images"})

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        return Path(os.environ.get("PRUNEBENCH_CACHE", Path.home() / ".cache" / "prunebench"))


@dataclass
class ImageData:
    """A dataset in memory: uint8 images (N, C, H, W), int64 labels, and how to treat them."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    classes: list[str] | None = None
    layout: str | None = None
    """How the source's files were laid out, for sources that read several (CIFAR: archive or folder)."""

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Source:
    """How to build one dataset: a loader and whether crop + flip augmentation applies."""

    load: Callable[[DataSettings], ImageData]
    cache_key: Callable[[DataSettings], dict]


DATASETS: Registry[Source] = Registry("dataset")

_REDUCED = re.compile(r"^(?P<base>[\w.-]+?)@(?P<count>\d+(?:\.\d+)?)(?P<unit>k?)$")


def parse_dataset_name(name: str) -> tuple[str, int | None]:
    """Split 'cifar10@5k' into ('cifar10', 5000); a plain name gives (name, None)."""
    match = _REDUCED.match(name)
    if match is None:
        if "@" in name:
            raise BenchError(f"dataset {name!r} has a malformed size; accepted: NAME@5k, NAME@500")
        return name, None
    count = float(match["count"]) * (1000 if match["unit"] else 1)
    if count < 1 or count != int(count):
        raise BenchError(f"dataset {name!r} asks for {count} training samples; accepted: a whole number >= 1")
    return match["base"], int(count)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale."""
    values = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
    std = values.std(dim=1).clamp_min(1e-6)
    return tuple(values.mean(dim=1).tolist()), tuple(std.tolist())


def stratified_subset(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded subset of `count` samples with class shares as in `labels`."""
    total = labels.numel()
    if count >= total:
        return torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    classes, class_counts = torch.unique(labels, return_counts=True)
    exact = class_counts.double() * count / total
    allocation = exact.floor().long()
    remainder = count - int(allocation.sum())
    if remainder:
        order = torch.argsort(exact - allocation, descending=True, stable=True)
        allocation[order[:remainder]] += 1
    chosen = []
    for cls, take in zip(classes.tolist(), allocation.tolist(), strict=True):
        members = torch.nonzero(labels == cls).flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:take]])
    return torch.sort(torch.cat(chosen)).values


def _cache_path(name: str, source: Source, settings: DataSettings) -> Path:
    key = json.dumps({"source": name, **source.cache_key(settings)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return settings.resolved_cache_dir() / f"{name}-{digest}.pt"


def _load_cached(name: str, source: Source, settings: DataSettings) -> ImageData:
    path = _cache_path(name, source, settings)
    if path.exists():
        try:
            return ImageData(**torch.load(path, weights_only=True))
        except Exception as error:  # a torn or foreign file: rebuild it
            print(f"warning: dataset cache {path} is unreadable ({error}); rebuilding it")
    data = source.load(settings)
    torch_save(path, data.to_dict())
    return data


def load_dataset(name: str, settings: DataSettings | None = None) -> ImageData:
    """The dataset `name` (optionally `NAME@Nk`), from the cache when it is there."""
    settings = settings or DataSettings()
    base, train_count = parse_dataset_name(name)
    data = _load_cached(base, DATASETS.get(base), settings)
    if train_count is not None:
        if train_count > data.train_labels.numel():
            raise BenchError(
                f"dataset {name!r} asks for {train_count} training samples but {base} has "
                f"{data.train_labels.numel()}; accepted: at most that many"
            )
        keep = stratified_subset(data.train_labels, train_count, settings.subset_seed)
        data = replace(data, train_images=data.train_images[keep], train_labels=data.train_labels[keep])
    return data
