"""The contract of a mask that changes during training (gradual pruning, SET, RigL): `MaskUpdater`.

`bench.train.Trainer.train(..., mask_updater=...)` counts training iterations t = epoch x batches per
epoch + batch index and asks `updates_at(t)` (host arithmetic only, so iterations without an update
never wait for the device). At an update iteration the loop runs the forward and backward pass as
usual; then either (`replaces_step`, RigL) the updater reads the *dense* gradient of that batch (taken
before the mask multiplies it) and the SGD step of that iteration is skipped, or the SGD step runs and
the updater changes the mask after it (SET, GMP). After every change the loop zeroes the weights and
the momentum buffers off the new mask, so pruned weights stay exactly zero between updates.

The live mask is `masks` (None: dense so far). The updater's own state (`state_dict`: tensors, numbers,
containers) goes into the phase's checkpoint with the weights and the mask, so a resumed phase ends
with the same numbers. Each update appends a row to `events` (iteration, epoch, fraction, weights
moved, weights kept), which methods write to the job's `mask_updates.csv`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from bench.masks import Masks

EVENT_COLUMNS = ("step", "epoch", "fraction", "moved", "kept")
"""A mask update's row: iteration t, its epoch, the drop fraction (or GMP's target sparsity) used,
how many weights moved (positions switched off: SET/RigL drop as many as they regrow elsewhere, GMP
prunes them) and how many
the mask keeps after it."""


class MaskUpdater(ABC):
    """A schedule of mask changes inside the training loop (see the module docstring)."""

    replaces_step: bool = False
    """True: an update iteration reads the dense gradient and takes no SGD step (RigL)."""

    def __init__(self, masks: Masks | None, steps_per_epoch: int):
        self.masks = masks
        self.steps_per_epoch = steps_per_epoch
        self.events: list[dict[str, float | int]] = []

    @abstractmethod
    def updates_at(self, step: int) -> bool:
        """Whether iteration `step` (0-based, counted over the phase) changes the mask."""

    @abstractmethod
    def new_masks(self, step: int, model: nn.Module, gradients: dict[str, torch.Tensor] | None
                  ) -> tuple[Masks, float]:
        """The mask after the update at `step`, and the fraction it used; `gradients` (dense, by
        prunable-weight name) only for updaters that `replaces_step`."""

    def update(self, step: int, model: nn.Module, gradients: dict[str, torch.Tensor] | None = None) -> Masks:
        """Change the mask at `step` and log the event; returns the new mask."""
        old = self.masks
        new, fraction = self.new_masks(step, model, gradients)
        kept = torch.stack([mask.sum() for mask in new.values()]).sum()
        before = old if old is not None else {name: torch.ones_like(mask) for name, mask in new.items()}
        moved = torch.stack([(before[name] > mask).sum() for name, mask in new.items()]).sum()
        self.masks = new
        self.events.append({"step": step, "epoch": step // self.steps_per_epoch, "fraction": fraction,
                            "moved": int(moved), "kept": int(kept)})
        return new

    def state_dict(self) -> dict[str, Any]:
        return {"events": [dict(event) for event in self.events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.events = [dict(event) for event in state["events"]]
