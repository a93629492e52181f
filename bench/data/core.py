"""The dataset record, the registry of sources, the on-disk cache and reduced training sets.

A source decodes its raw files once into an `ImageData` of uint8 tensors (N, C, H, W); the result is
saved atomically, with a checksum, to a cache file keyed by the source, its root, its settings and a
fingerprint of its files (`folder_fingerprint`: names, sizes and mtimes), so later jobs load a single
tensor file, and adding a class or an image rebuilds it. A cache file that fails its checksum or holds
more than tensors is rebuilt, with a warning naming it. `NAME@Nk` names a class-stratified, seeded subset of NAME's training set (the test
set is kept whole): the paper's "reduced training samples" tables use cifar10@5k, imagenet-sub@10k
and cifar100@5k.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from bench.atomic import CorruptFileError, load_checked, save_checked
from bench.data_settings import DataSettings
from bench.errors import BenchError
from bench.plugins import DATASETS_GROUP
from bench.registry import Registry


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


def unknown_sizes(settings: DataSettings) -> None:
    """A source that cannot tell its sizes without reading its files."""
    return None


@dataclass(frozen=True)
class Source:
    """How to build one dataset: a loader, its cache key, and its (training, test) sizes without loading it."""

    load: Callable[[DataSettings], ImageData]
    cache_key: Callable[[DataSettings], dict]
    sizes: Callable[[DataSettings], tuple[int, int] | None] = unknown_sizes


DATASETS: Registry[Source] = Registry("dataset", DATASETS_GROUP)

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


def dataset_sizes(name: str, settings: DataSettings | None = None) -> tuple[int, int] | None:
    """(training, test) images of `name` (`NAME@Nk` too) without loading its data; None where unknown."""
    base, train_count = parse_dataset_name(name)
    sizes = DATASETS.get(base).sizes(settings or DataSettings())
    if sizes is None:
        return None
    train, test = sizes
    return (train if train_count is None else min(train, train_count)), test


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


def folder_fingerprint(root: Path, mtimes: bool = True) -> dict:
    """What identifies the files under `root`: their count and a sha256 of (path, size[, mtime]) of each.

    A source's `cache_key` includes it, so that a file added, removed, resized or touched changes the
    key and rebuilds the cache. `mtimes=False` keys on sizes only (archives that are copied around).
    """
    root = Path(root)
    entries = []
    for folder, _, names in os.walk(root, followlinks=True):
        for name in names:
            path = Path(folder) / name
            stat = path.stat()
            entries.append(f"{path.relative_to(root).as_posix()}\t{stat.st_size}" + (f"\t{stat.st_mtime_ns}" if mtimes else ""))
    digest = hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()[:16]
    return {"files": len(entries), "sha256": digest}


def files_fingerprint(paths: list[Path]) -> dict:
    """`folder_fingerprint` for a list of files (e.g. batch files found by a pattern)."""
    entries = sorted(f"{path.name}\t{path.stat().st_size}\t{path.stat().st_mtime_ns}" for path in paths)
    return {"files": len(entries), "sha256": hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]}


def cache_path(name: str, source: Source, settings: DataSettings) -> Path:
    key = json.dumps({"source": name, **source.cache_key(settings)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return settings.resolved_cache_dir() / f"{name}-{digest}.pt"


def _load_cached(name: str, source: Source, settings: DataSettings) -> ImageData:
    path = cache_path(name, source, settings)
    if path.exists():
        try:
            return ImageData(**load_checked(path))
        except (CorruptFileError, TypeError) as error:  # a torn, edited or foreign file: rebuild it
            print(f"warning: dataset cache {path} is unreadable ({error}); rebuilding it", file=sys.stderr, flush=True)
    data = source.load(settings)
    _check_classes(name, data)
    # the key again: a download may have created the files that the key fingerprints
    save_checked(cache_path(name, source, settings), data.to_dict())
    return data


def _check_classes(name: str, data: ImageData) -> None:
    present = torch.unique(data.train_labels).numel()
    if data.num_classes < 2 or present < 2:
        raise BenchError(f"dataset {name} has {present} class(es) in its training set; accepted: at least 2 classes")


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
