"""`set`: Sparse Evolutionary Training (Mocanu et al., Nature Communications 2018) as the sparse-training
papers run it: sparse from the start; at each update every layer drops its smallest-magnitude active
weights and regrows as many at uniformly random positions, new weights at zero.

`rewiring = "rigl"` (default) is the SET of google-research/rigl (`rigl/sparse_optimizers.py`
`SparseSETOptimizer`; `rigl/sparse_optimizers_base.py` `SparseSETOptimizerBase.generic_mask_update`,
`_get_update_op`, `get_drop_fraction`), which the RigL paper compares against: RigL's schedule (alpha 0.3
cosine-annealed, delta-T 100, until 0.75 T), the SGD step of the update iteration applied first, then
the drop/grow; new connections at zero with zero momentum (`grow_init` zeros, `reset_momentum`). A job with
T_end below delta-T updates every max(2, T_end // `short_job_updates`) iterations instead (prunebench's
choice, said at launch and recorded as `extra.update_interval`; 0 refuses such a job).
Random growth draws from a generator seeded by (trial, iteration, layer), stateless like RIGL's
(seeded by layer name and step), so a resumed job draws the same positions.

`rewiring = "per-epoch"` is Mocanu's original (dcmocanu/sparse-evolutionary-artificial-neural-networks
`SET-MLP-Keras-Weights-Mask/set_mlp_keras_cifar10.py` `rewireMask`/`weightsEvolution`): after every
epoch, with the constant fraction zeta = `drop_fraction` (0.3), each layer removes the zeta fraction of
its negative weights closest to zero and the zeta fraction of its positive weights closest to zero
(keeping int((1 - zeta) n) of each sign), then adds random positions until its count is back.

Deviations: exact per-layer counts and an ERK (or uniform) random init instead of SET's Bernoulli
Erdos-Renyi mask with epsilon; every prunable layer is sparse (SET-ORIG keeps its output layer dense);
no drop-score noise (see `rigl`); per-epoch: new weights at zero as the Keras version (the sparse
Python version draws N(0, 1)/10), momentum kept except for new and removed connections (the Keras
version rebuilds its SGD optimizer, resetting all momentum, each epoch), active weights exactly zero
count as positive, and no rewiring after the last epoch (SET-ORIG rewires after it too, but reports the
accuracy measured before).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from baselines._sparse_training import (
    Clock,
    DropGrowSettings,
    DropGrowTraining,
    DropGrowUpdater,
    active_counts,
    initial_masks,
    random_scores,
)
from bench.errors import BenchError
from bench.job_context import JobContext
from bench.mask_updates import MaskUpdater
from bench.masks import Masks, layerwise_count_mask, prunable_parameters
from methods.registry import register

REWIRINGS = ("rigl", "per-epoch")


@dataclass(frozen=True)
class SETSettings(DropGrowSettings):
    rewiring: str = field(default="rigl", metadata={
        "help": "rigl: RigL's schedule (RIGL's SET); per-epoch: Mocanu's rewiring after every epoch with the "
                "constant zeta = drop_fraction and sign-split removal"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rewiring not in REWIRINGS:
            raise BenchError(f"set rewiring = {self.rewiring!r}; accepted: {', '.join(REWIRINGS)}")


class SETUpdater(DropGrowUpdater):
    """RIGL's SET: magnitude drop, uniform random growth."""

    def grow_scores(self, step: int, weights: dict[str, torch.Tensor], gradients: dict[str, torch.Tensor] | None
                    ) -> dict[str, torch.Tensor]:
        return random_scores(weights, lambda index: self.seed_of("grow", step, index))


class PerEpochSETUpdater(SETUpdater):
    """Mocanu's rewiring at the last iteration of every epoch but the final one, zeta constant."""

    def __init__(self, masks: Masks, clock: Clock, settings: SETSettings, seed_of):
        super().__init__(masks, clock, settings, seed_of)
        self.total = clock.total

    def updates_at(self, step: int) -> bool:
        return (step + 1) % self.steps_per_epoch == 0 and step + 1 < self.total

    def new_masks(self, step: int, model: nn.Module, gradients: dict[str, torch.Tensor] | None
                  ) -> tuple[Masks, float]:
        zeta = self.settings.drop_fraction
        weights = {name: weight.detach() for name, weight in prunable_parameters(model).items()}
        active = active_counts(self.masks)
        negative = {name: self.masks[name] * (weight < 0) for name, weight in weights.items()}
        positive = {name: self.masks[name] - negative[name] for name in weights}
        kept_negative = layerwise_count_mask({name: -weight for name, weight in weights.items()},
                                             {name: int((1 - zeta) * count) for name, count in
                                              active_counts(negative).items()}, current=negative)
        kept_positive = layerwise_count_mask(weights, {name: int((1 - zeta) * count) for name, count in
                                                       active_counts(positive).items()}, current=positive)
        kept = {name: kept_negative[name] + kept_positive[name] for name in weights}
        regrow = {name: active[name] - count for name, count in active_counts(kept).items()}
        grown = layerwise_count_mask(self.grow_scores(step, weights, None), regrow,
                                     current={name: 1 - mask for name, mask in kept.items()})
        return {name: kept[name] + grown[name] for name in weights}, zeta


@register("set")
class SET(DropGrowTraining):
    Settings = SETSettings
    quick_hparams = {"update_interval": 1}

    def check_schedule(self, clock: Clock) -> None:
        if self.settings.rewiring != "per-epoch":  # per-epoch has no delta-T (`SparseTraining.run` checks it)
            super().check_schedule(clock)

    def schedule_notes(self, clock: Clock) -> list[str]:
        return super().schedule_notes(clock) if self.settings.rewiring != "per-epoch" else []

    def schedule_record(self, clock: Clock) -> dict[str, Any]:
        return super().schedule_record(clock) if self.settings.rewiring != "per-epoch" else {}

    def updater(self, context: JobContext, model: nn.Module, clock: Clock) -> MaskUpdater:
        updater_class = PerEpochSETUpdater if self.settings.rewiring == "per-epoch" else SETUpdater
        return updater_class(initial_masks(context, model, self.settings, self.name), clock, self.settings,
                             lambda *names: context.seed(self.name, *names))
