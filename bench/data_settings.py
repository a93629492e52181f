"""Where a job's data comes from (`DataSettings`): the data root, the cache, image size and subsets.

Apart from `bench.data` so that what only reads job specs and records (status, report) never imports
torch: a job spec stores these beside its identity (`bench.spec.RunSettings`) but never hashes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


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
