"""`gmp`: gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune"): train from the dense
init and, every delta-t iterations between t0 and t1, prune each layer by weight magnitude to the cubic
schedule s(t) = s_f + (s_i - s_f)(1 - (t - t0)/(t1 - t0))^3.

Follows tensorflow/model-optimization (`tensorflow_model_optimization/python/core/sparsity/keras/
pruning_schedule.py` `PolynomialDecay.__call__`, power 3; `_should_prune_in_step`: t0 <= t <= t1 and
(t - t0) % delta-t == 0; `pruning_impl.py` `_update_mask`: per-layer top-k of |W|, at least one weight
kept) and RigL's "pruning" baseline (google-research/rigl `rigl/cifar_resnet/resnet_train_eval.py`,
`training_method=prune`: the contrib pruner with `threshold_decay=0`, begin at ~20% and end at ~75% of
training, every 1,000 of ~98k iterations, the update after the SGD step). Defaults: s_i = 0,
t0 = 0.2 T, t1 = 0.75 T, delta-t = T/80 (1,000 iterations of the recipe's 80,000 on CIFAR-10: 45 events,
the first a no-op); each layer goes to its own final sparsity s_l of the `distribution` (ERK by default,
as RIGL's RL code gives each layer an ERK target, `rigl/rl/sparse_utils.py get_pruning_sparsities`; use
`uniform` for Zhu & Gupta's one target per layer): s_l(t) = s_l + (min(s_i, s_l) - s_l)(1 - p)^3.

Deviations (spec 2d): exact counts (n - floor(s_l(t) n) kept, ranked by |W| among the still-active weights,
stable on ties) instead of contrib's histogram threshold or TFMOT's tie-keeping, so masks only shrink;
pruned weights and their momentum are zeroed at once (TFMOT leaves slots alone, #684); a last event at
t1 is added when (t1 - t0) is not a multiple of delta-t, so the final sparsity is always reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from baselines._sparse_training import (
    Clock,
    DistributionSettings,
    SparseTraining,
    active_counts,
    gmp_sparsity,
)
from bench.errors import BenchError
from bench.job_context import JobContext
from bench.layer_density import model_sparsities, zeros_count
from bench.mask_updates import MaskUpdater
from bench.masks import Masks, layerwise_count_mask, ones_masks, prunable_parameters
from methods.registry import register


@dataclass(frozen=True)
class GMPSettings(DistributionSettings):
    initial_sparsity: float = field(default=0.0, metadata={"help": "s_i, the sparsity at t0 (Zhu & Gupta: 0)"})
    begin_fraction: float = field(default=0.2, metadata={"help": "t0 as a fraction of the training iterations"})
    end_fraction: float = field(default=0.75, metadata={"help": "t1 as a fraction of the training iterations"})
    interval_fraction: float = field(default=1 / 80, metadata={
        "help": "delta-t as a fraction of the training iterations (RIGL CIFAR: 1,000 steps; ours 1,000 of 80,000)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0.0 <= self.begin_fraction <= self.end_fraction <= 1.0 and 0.0 <= self.initial_sparsity < 1.0
                and 0.0 < self.interval_fraction <= 1.0):
            raise BenchError(f"gmp schedule {self}; accepted: 0 <= begin_fraction <= end_fraction <= 1, "
                             "0 <= initial_sparsity < 1, 0 < interval_fraction <= 1")


class GMPUpdater(MaskUpdater):
    def __init__(self, clock: Clock, settings: GMPSettings, final: dict[str, float], sparsity: float):
        super().__init__(None, clock.steps_per_epoch)
        self.settings = settings
        self.final = final
        self.sparsity = sparsity
        self.end = min(clock.at(settings.end_fraction), clock.total - 1)
        self.begin = min(clock.at(settings.begin_fraction), self.end)
        self.interval = max(1, clock.at(settings.interval_fraction))

    def updates_at(self, step: int) -> bool:
        return self.begin <= step <= self.end and ((step - self.begin) % self.interval == 0 or step == self.end)

    def new_masks(self, step: int, model: nn.Module, gradients: dict[str, torch.Tensor] | None
                  ) -> tuple[Masks, float]:
        weights = prunable_parameters(model)
        current = self.masks if self.masks is not None else ones_masks(model)
        active = active_counts(current)
        counts = {}
        for name, weight in weights.items():
            target = gmp_sparsity(step, self.begin, self.end, min(self.settings.initial_sparsity, self.final[name]),
                                  self.final[name])
            counts[name] = min(active[name], max(1, weight.numel() - zeros_count(weight.numel(), target)))
        scores = {name: weight.detach().abs() for name, weight in weights.items()}
        overall = gmp_sparsity(step, self.begin, self.end, self.settings.initial_sparsity, self.sparsity)
        return layerwise_count_mask(scores, counts, current=current), overall


@register("gmp")
class GMP(SparseTraining):
    Settings = GMPSettings

    def updater(self, context: JobContext, model: nn.Module, clock: Clock) -> MaskUpdater:
        final = model_sparsities(model, self.settings.distribution, context.sparsity, self.settings.dense_first_layer)
        return GMPUpdater(clock, self.settings, final, context.sparsity)
