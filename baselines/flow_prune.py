"""`flow-prune`: Flow&Prune, pruning early in training guided by gradient flow (Lubana & Dick, ICLR 2021,
"A gradient flow framework for analyzing network pruning").

Follows EkdeepSLubana/flowandprune (`imp_estimator.py cal_importance/cal_grad/cal_hg`, `main.py`,
`pruner.py`) in the *unstructured adaptation* of the spec's section 5 (the official code prunes whole
conv filters; prunebench compares unstructured masks): each importance measure is used per weight
instead of summed over a filter, over every prunable weight (classifier included), globally.

- Measures (`measure`): `biased_loss` theta^2 |g| (default: loss preservation biased to small weights,
  the paper's recommendation for minimally trained models), `loss_based` |theta g|, `mag_based`
  |theta|, `grasp` theta * Hg (signed), `grad_preserve` |theta * Hg|; the lowest are pruned.
- g: eval-mode BN, the batch-size-weighted mean gradient over `importance_samples` (2560) augmented
  training images in batches of 128 (`cal_grad`); Hg: eval-mode BN, int(2560 / C) images per class,
  one batch per class, Hg = mean_c grad(g_bar . grad L_c) (`cal_hg`).
- Schedule: `rounds` (25) rounds of one epoch each at the start of the recipe's run; after round i
  (i = 1..n) the remaining fraction is R_i = n(1-p) / (n(1-p) + i p), i.e. round i removes
  p / (i p + n(1-p)) of the surviving weights (p = the requested sparsity); pruned weights stay pruned,
  momentum of pruned weights is dropped. Then the run finishes the recipe (80/40/40 for 160 epochs).

Deviations: unstructured (above); temperature T = 1 in scoring and training (the code's default is 5);
the pruning rounds are capped at half the recipe's epochs (`rounds_used` in the record) so that short
smoke runs keep the schedule's shape; the official per-round new optimizer is replaced by keeping it
and zeroing the momentum of the newly pruned weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from baselines._scoring import (
    bn_mode,
    class_balanced_sample,
    hessian_gradient_product,
    loss_gradients,
    scoring_batches,
)
from bench.errors import BenchError
from bench.job_context import JobContext
from bench.masks import Masks, global_mask, prunable_parameters
from methods.base import Method
from methods.registry import register

MEASURES = ("biased_loss", "loss_based", "mag_based", "grasp", "grad_preserve")
HESSIAN_MEASURES = ("grasp", "grad_preserve")
SCORING_TIMES_SNAPSHOT = "round_scoring_seconds"


@dataclass(frozen=True)
class FlowPruneSettings:
    measure: str = field(default="biased_loss", metadata={"help": f"importance measure, one of {', '.join(MEASURES)}"})
    rounds: int = field(default=25, metadata={"help": "pruning rounds, one training epoch each (official 25)"})
    importance_samples: int = field(
        default=2560, metadata={"help": "training images per scoring (official imp_samples 2560)"})
    importance_batch_size: int = field(default=128, metadata={"help": "batch size of the gradient estimate"})
    temperature: float = field(default=1.0, metadata={"help": "logit temperature while scoring (code: 5)"})

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise BenchError(f"flow-prune measure {self.measure!r} is unknown; accepted: {', '.join(MEASURES)}")
        if self.rounds < 1:
            raise BenchError(f"flow-prune rounds = {self.rounds}; accepted: an integer >= 1")


def remaining_fraction(round_index: int, rounds: int, sparsity: float) -> float:
    """R_i = n(1-p) / (n(1-p) + i p): the fraction of weights left after round i of n (section 5)."""
    kept = rounds * (1.0 - sparsity)
    return kept / (kept + round_index * sparsity)


def importance(model: nn.Module, measure: str, gradient: dict[str, torch.Tensor] | None,
               hessian_gradient: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Per-weight importance; the lowest are pruned."""
    scores = {}
    for name, weight in prunable_parameters(model).items():
        theta = weight.detach()
        if measure == "mag_based":
            scores[name] = theta.abs()
        elif measure == "loss_based":
            scores[name] = (theta * gradient[name]).abs()
        elif measure == "biased_loss":
            scores[name] = theta.square() * gradient[name].abs()
        elif measure == "grasp":
            scores[name] = theta * hessian_gradient[name]
        else:  # grad_preserve
            scores[name] = (theta * hessian_gradient[name]).abs()
    return scores


@register("flow-prune")
class FlowPrune(Method):
    Settings = FlowPruneSettings
    quick_hparams = {"rounds": 2, "importance_samples": 256}
    ablations = ("none", "invert")  # its masks change during training, never handed to the loop at a start

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        settings = self.settings
        rounds = min(settings.rounds, max(1, context.train_settings.epochs // 2))
        scoring_seconds: dict[int, float] = context.load_snapshot(SCORING_TIMES_SNAPSHOT) or {}

        def prune_after_epoch(epoch: int, model: nn.Module, masks: Masks | None) -> Masks | None:
            if epoch >= rounds:
                return None
            started = time.perf_counter()
            scores = importance(model, settings.measure, *self._estimates(context, model, epoch))
            target = 1.0 - remaining_fraction(epoch + 1, rounds, context.sparsity)
            new_masks = global_mask(scores, target, current=masks)
            scoring_seconds[epoch] = time.perf_counter() - started
            context.save_snapshot(SCORING_TIMES_SNAPSHOT, scoring_seconds)
            return new_masks

        model = context.new_model()
        result = context.train(model, "train", on_epoch_end=prune_after_epoch)
        # the loop timed the scoring as part of its epochs; count it as scoring time instead
        total_scoring = sum(scoring_seconds.values())
        context.count_as_scoring(total_scoring)
        return [context.record(model, result.masks, result.evaluation, result.epochs, rounds_used=rounds,
                               measure=settings.measure, round_scoring_s=total_scoring / rounds)]

    def _estimates(self, context: JobContext, model: nn.Module, round_index: int):
        """(g, Hg) as the measure needs them (None where it does not), eval-mode BN."""
        settings = self.settings
        with bn_mode(model, train=False):
            if settings.measure in HESSIAN_MEASURES:
                per_class = settings.importance_samples // context.data.data.num_classes
                batches = class_balanced_sample(context.data, per_class, context.seed("flow-prune", round_index))
                gradient, hessian_gradient = hessian_gradient_product(model, batches, settings.temperature)
                count = len(batches)
                return ({name: value / count for name, value in gradient.items()},
                        {name: value / count for name, value in hessian_gradient.items()})
            if settings.measure == "mag_based":
                return None, None
            batches = scoring_batches(context.data, settings.importance_samples, settings.importance_batch_size,
                                      context.seed("flow-prune", round_index), augment=None)
            return loss_gradients(model, batches, settings.temperature, weighting="size"), None
