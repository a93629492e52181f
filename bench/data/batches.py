"""Batches as tensor operations on the training device: shuffle, crop (pad 4) + flip, normalise.

The uint8 images move to the device once. Each epoch draws its permutation, crop offsets and flips
from a seed on the CPU (a few integers per image) and moves them in one copy; every batch is then cut,
augmented and normalised without leaving the device and without per-image Python code. The crop is
torchvision's `RandomCrop(32, padding=4)` (zero padding in pixel space) and the flip its
`RandomHorizontalFlip()`, applied to the whole batch at once.

Both splits are stored channels-last on the device, so that every batch, training and test alike,
reaches the network in one memory format (the crop's gather produces channels-last anyway; a test pass
in another format than training runs other, slower convolution kernels on the CPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from bench.data.core import ImageData

CROP_PADDING = 4
EVAL_BATCH_SIZE = {"cpu": 100}
"""Test-pass batch size by device type (others: `DEFAULT_EVAL_BATCH_SIZE`). On the CPU a channels-last
ResNet-20 forward pass is several times slower per image at 1,000 images a batch than at 100 (the
activations of a small batch stay in cache), so the CPU evaluates in batches of the recipe's size."""
DEFAULT_EVAL_BATCH_SIZE = 1000


@dataclass
class EpochPlan:
    """The randomness of one epoch: order, crop offsets (row, col) and flips, all on the device."""

    order: torch.Tensor
    offsets: torch.Tensor | None
    flips: torch.Tensor | None


def random_crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Crop each padded image at its (row, col) offset and mirror the flagged ones (uint8 in, uint8 out)."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    row_steps = torch.arange(height, device=images.device)
    col_steps = torch.arange(width, device=images.device)
    col_steps = torch.where(flips[:, None], (width - 1) - col_steps, col_steps)
    rows = (offsets[:, 0, None] + row_steps)[:, :, None]
    cols = (offsets[:, 1, None] + col_steps)[:, None, :]
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch_index, rows, cols].permute(0, 3, 1, 2)


class DeviceData:
    """An `ImageData` on a device, serving normalised (and augmented) batches."""

    def __init__(self, data: ImageData, device: torch.device | str, eval_batch_size: int | None = None):
        self.data = data
        self.device = torch.device(device)
        self.eval_batch_size = eval_batch_size or EVAL_BATCH_SIZE.get(self.device.type, DEFAULT_EVAL_BATCH_SIZE)
        self.train_images = data.train_images.to(self.device).contiguous(memory_format=torch.channels_last)
        self.train_labels = data.train_labels.to(self.device)
        self.test_images = data.test_images.to(self.device).contiguous(memory_format=torch.channels_last)
        self.test_labels = data.test_labels.to(self.device)
        mean = torch.tensor(data.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(data.std, device=self.device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std as one multiply-add
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std

    @property
    def train_size(self) -> int:
        return int(self.train_labels.numel())

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self._shift, images.float(), self._scale)

    def epoch_plan(self, seed: int, augment: bool | None = None) -> EpochPlan:
        augment = self.data.augment if augment is None else augment
        generator = torch.Generator().manual_seed(seed)
        count = self.train_size
        order = torch.randperm(count, generator=generator)
        offsets = flips = None
        if augment:
            offsets = torch.randint(0, 2 * CROP_PADDING + 1, (count, 2), generator=generator)
            flips = torch.rand(count, generator=generator) < 0.5
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        return EpochPlan(order.to(self.device), offsets, flips)

    def train_batches(self, seed: int, batch_size: int, augment: bool | None = None
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled, augmented, normalised training batches, fixed by `seed`."""
        plan = self.epoch_plan(seed, augment)
        for start in range(0, self.train_size, batch_size):
            index = plan.order[start : start + batch_size]
            images = self.train_images[index]
            if plan.offsets is not None:
                images = random_crop_flip(images, plan.offsets[start : start + batch_size],
                                          plan.flips[start : start + batch_size], CROP_PADDING)
            yield self.normalise(images), self.train_labels[index]

    def batches_per_epoch(self, batch_size: int) -> int:
        return -(-self.train_size // batch_size)

    def test_batches(self, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batch_size = batch_size or self.eval_batch_size
        for start in range(0, int(self.test_labels.numel()), batch_size):
            yield (self.normalise(self.test_images[start : start + batch_size]),
                   self.test_labels[start : start + batch_size])

    def fixed_train_sample(self, count: int, seed: int, augment: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` training images drawn with `seed` (no augmentation by default): data for scoring."""
        return next(self.train_batches(seed, count, augment))
